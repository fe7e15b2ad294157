//! Sixteen bytes at a time: byte-class masks of a block of a line, for the scans every line
//! pays for (the client address, the timestamp's shape, the ends of quoted fields, the
//! path-simplicity scan of the request target). Owns the choice of vector unit: SSE2 on
//! x86_64 (part of that target's baseline, through `safe_arch`, which keeps the crate free of
//! `unsafe`), a byte loop with the same answers elsewhere; the two are tested against each
//! other. Never parses, and never reads past the bytes it is given.

use std::ops::{BitAnd, BitOr, Not};

/// Sixteen bytes of a line.
#[derive(Clone, Copy)]
pub struct Block(imp::Vector);

/// One lane per byte of a [`Block`], each all ones (the byte is in the class) or all zeros.
#[derive(Clone, Copy)]
pub struct Lanes(imp::Vector);

impl Block {
    #[inline(always)]
    pub fn new(bytes: &[u8; 16]) -> Block {
        Block(imp::load(bytes))
    }

    /// The first (up to) sixteen bytes of `bytes`, the lanes past its end NUL. Copied as two
    /// overlapping words, not byte by byte or by a call to `memcpy`.
    #[inline(always)]
    pub fn padded(bytes: &[u8]) -> Block {
        let mut block = [0u8; 16];
        let len = bytes.len().min(16);
        if len >= 8 {
            block[..8].copy_from_slice(&bytes[..8]);
            block[len - 8..len].copy_from_slice(&bytes[len - 8..len]);
        } else if len >= 4 {
            block[..4].copy_from_slice(&bytes[..4]);
            block[len - 4..len].copy_from_slice(&bytes[len - 4..len]);
        } else {
            block[..len].copy_from_slice(&bytes[..len]);
        }
        Block::new(&block)
    }

    /// Sixteen copies of `byte`.
    #[inline(always)]
    pub fn splat(byte: u8) -> Block {
        Block::new(&[byte; 16])
    }

    /// The block one byte on: lane `i` holds byte `i + 1`, the last lane NUL.
    #[inline(always)]
    pub fn following(self) -> Block {
        Block(imp::following(self.0))
    }

    /// The lanes whose byte is `byte`.
    #[inline(always)]
    pub fn eq(self, byte: u8) -> Lanes {
        Lanes(imp::eq(self.0, byte))
    }

    /// The lanes whose byte lies in `low[i]..=high[i]` (unsigned).
    #[inline(always)]
    pub fn within(self, low: Block, high: Block) -> Lanes {
        Lanes(imp::within(self.0, low.0, high.0))
    }
}

/// The first position of `bytes` whose byte is in `class` (a test of a block's lanes), or
/// `None`. For short searches, where `memchr`'s set-up costs more than the scan: blocks from
/// the start, then the slice's last sixteen bytes (lanes already searched are dropped), or
/// the whole slice padded with NULs (lanes past its end are dropped).
#[inline(always)]
pub fn position(bytes: &[u8], class: impl Fn(Block) -> Lanes) -> Option<usize> {
    let mut at = 0;
    while let Some(block) = bytes.get(at..at + 16) {
        let bits = class(Block::new(block.try_into().expect("sixteen bytes"))).bits();
        if bits != 0 {
            return Some(at + bits.trailing_zeros() as usize);
        }
        at += 16;
    }
    if at >= bytes.len() {
        return None;
    }
    let (start, block) = match bytes.len().checked_sub(16) {
        Some(start) => (start, Block::new(bytes[start..].try_into().expect("sixteen bytes"))),
        None => (0, Block::padded(bytes)),
    };
    let searched = (1u32 << (at - start)) - 1;
    let past_end = !((1u32 << (bytes.len() - start)) - 1);
    let bits = class(block).bits() & !searched & !past_end;
    (bits != 0).then(|| start + bits.trailing_zeros() as usize)
}

impl Lanes {
    /// Bit `i` set where lane `i` is set.
    #[inline(always)]
    pub fn bits(self) -> u32 {
        imp::bits(self.0)
    }
}

impl BitOr for Block {
    type Output = Block;
    /// Byte-wise OR (e.g. `0x20` folds ASCII letters to lower case).
    #[inline(always)]
    fn bitor(self, other: Block) -> Block {
        Block(imp::or(self.0, other.0))
    }
}

impl BitOr for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn bitor(self, other: Lanes) -> Lanes {
        Lanes(imp::or(self.0, other.0))
    }
}

impl Not for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn not(self) -> Lanes {
        Lanes(imp::not(self.0))
    }
}

impl BitAnd for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn bitand(self, other: Lanes) -> Lanes {
        Lanes(imp::and(self.0, other.0))
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use vector as imp;

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use bytewise as imp;

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod vector {
    use safe_arch::*;

    pub type Vector = m128i;

    #[inline(always)]
    pub fn load(bytes: &[u8; 16]) -> Vector {
        load_unaligned_m128i(bytes)
    }

    #[inline(always)]
    pub fn following(block: Vector) -> Vector {
        byte_shr_imm_u128_m128i::<1>(block)
    }

    #[inline(always)]
    pub fn eq(block: Vector, byte: u8) -> Vector {
        cmp_eq_mask_i8_m128i(block, set_splat_i8_m128i(byte as i8))
    }

    #[inline(always)]
    pub fn within(block: Vector, low: Vector, high: Vector) -> Vector {
        // Unsigned `low <= b` is `max(b, low) == b`, `b <= high` is `min(b, high) == b`.
        let at_least = cmp_eq_mask_i8_m128i(max_u8_m128i(block, low), block);
        let at_most = cmp_eq_mask_i8_m128i(min_u8_m128i(block, high), block);
        bitand_m128i(at_least, at_most)
    }

    #[inline(always)]
    pub fn or(a: Vector, b: Vector) -> Vector {
        bitor_m128i(a, b)
    }

    #[inline(always)]
    pub fn and(a: Vector, b: Vector) -> Vector {
        bitand_m128i(a, b)
    }

    #[inline(always)]
    pub fn not(a: Vector) -> Vector {
        bitxor_m128i(a, set_splat_i8_m128i(-1))
    }

    #[inline(always)]
    pub fn bits(lanes: Vector) -> u32 {
        move_mask_i8_m128i(lanes) as u32 & 0xffff
    }
}

/// The byte loop: the answers of [`vector`], lane by lane.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
mod bytewise {
    pub type Vector = [u8; 16];

    fn lanes(test: impl Fn(usize) -> bool) -> Vector {
        std::array::from_fn(|i| if test(i) { 0xff } else { 0 })
    }

    pub fn load(bytes: &[u8; 16]) -> Vector {
        *bytes
    }

    pub fn following(block: Vector) -> Vector {
        std::array::from_fn(|i| if i < 15 { block[i + 1] } else { 0 })
    }

    pub fn eq(block: Vector, byte: u8) -> Vector {
        lanes(|i| block[i] == byte)
    }

    pub fn within(block: Vector, low: Vector, high: Vector) -> Vector {
        lanes(|i| (low[i]..=high[i]).contains(&block[i]))
    }

    pub fn or(a: Vector, b: Vector) -> Vector {
        std::array::from_fn(|i| a[i] | b[i])
    }

    pub fn and(a: Vector, b: Vector) -> Vector {
        std::array::from_fn(|i| a[i] & b[i])
    }

    pub fn not(a: Vector) -> Vector {
        a.map(|byte| !byte)
    }

    pub fn bits(lanes: Vector) -> u32 {
        (0..16).filter(|&i| lanes[i] != 0).fold(0, |bits, i| bits | 1 << i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The vector unit and the byte loop agree on every operation, whichever one `Block`
        /// uses on this target.
        #[test]
        fn blocks_agree_with_the_byte_loop(
            a in any::<[u8; 16]>(),
            b in any::<[u8; 16]>(),
            low in any::<[u8; 16]>(),
            high in any::<[u8; 16]>(),
            byte in any::<u8>(),
            pick in any::<prop::sample::Index>(),
        ) {
            // A byte that occurs, half the time.
            let byte = if byte % 2 == 0 { a[pick.index(16)] } else { byte };
            let (block, other) = (Block::new(&a), Block::new(&b));
            let (la, lb) = (bytewise::load(&a), bytewise::load(&b));
            prop_assert_eq!(block.eq(byte).bits(), bytewise::bits(bytewise::eq(la, byte)));
            let following = block.following().eq(byte).bits();
            prop_assert_eq!(following, bytewise::bits(bytewise::eq(bytewise::following(la), byte)));
            let within = block.within(Block::new(&low), Block::new(&high)).bits();
            prop_assert_eq!(within, bytewise::bits(bytewise::within(la, low, high)));
            let (ea, eb) = (block.eq(byte), other.eq(byte));
            let (ba, bb) = (bytewise::eq(la, byte), bytewise::eq(lb, byte));
            prop_assert_eq!((ea | eb).bits(), bytewise::bits(bytewise::or(ba, bb)));
            prop_assert_eq!((ea & eb).bits(), bytewise::bits(bytewise::and(ba, bb)));
            prop_assert_eq!((!ea).bits(), bytewise::bits(bytewise::not(ba)));
            prop_assert_eq!((!ea).bits(), !ea.bits() & 0xffff);
            prop_assert_eq!(Block::splat(byte).eq(byte).bits(), 0xffff);
            let of_bytes = |test: &dyn Fn(usize) -> bool| (0..16).filter(|&i| test(i)).fold(0, |bits, i| bits | 1 << i);
            prop_assert_eq!(block.eq(byte).bits(), of_bytes(&|i| a[i] == byte));
            // Byte-wise OR of blocks (case folding).
            let ored = a[pick.index(16)] | b[pick.index(16)];
            prop_assert_eq!((block | other).eq(ored).bits(), of_bytes(&|i| a[i] | b[i] == ored));
        }
    }

    proptest! {
        /// `position` is the first matching byte's index, whatever the length and wherever
        /// the byte falls (in a whole block, in the overlapping last one, in a padded one).
        #[test]
        fn position_is_the_first_match(
            bytes in proptest::collection::vec(proptest::sample::select(&b"ab\"\0"[..]), 0..60),
            clean in 0usize..60,
        ) {
            let bytes: Vec<u8> = bytes.iter().enumerate().map(|(i, &b)| if i < clean { b'a' } else { b }).collect();
            let first = |wanted: &[u8]| bytes.iter().position(|b| wanted.contains(b));
            prop_assert_eq!(position(&bytes, |block| block.eq(b'"')), first(b"\""));
            prop_assert_eq!(position(&bytes, |block| block.eq(0)), first(b"\0"));
            prop_assert_eq!(position(&bytes, |block| block.eq(b'"') | block.eq(0)), first(b"\"\0"));
        }
    }

    #[test]
    fn short_blocks_are_padded_with_nuls() {
        let bytes = b"/recordings/a.wav";
        for len in 0..=bytes.len() {
            let block = Block::padded(&bytes[..len]);
            let nuls = block.eq(0).bits();
            assert_eq!(nuls, 0xffff & !((1u32 << len.min(16)) - 1), "{len}");
            let expected = |byte: u8, shift: usize| {
                (0..len.min(16)).filter(|&i| i >= shift && bytes[i] == byte).fold(0, |m, i| m | 1 << (i - shift))
            };
            assert_eq!(block.eq(b'/').bits(), expected(b'/', 0), "{len}");
            assert_eq!(block.following().eq(b'r').bits(), expected(b'r', 1), "{len}");
        }
    }
}
