# Shared setup helpers for scripts/: install what is missing, idempotently, on Debian.
# Sourced, not run.

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
ensure_debian_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$apt_updated" = 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    echo "== installing ${missing[*]}"
    # Packages like nginx start their service on install; tests start their own servers on
    # loopback, so installs must not start anything (policy-rc.d 101 = "not now").
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && made_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    [ "$made_policy" = 1 ] && as_root rm -f "$policy"
    return 0
}

# A C compiler and make (rdkafka and zstd-sys build C), and a Rust toolchain via rustup when
# cargo is missing (Debian's packaged rustc is older than this crate needs).
ensure_build_tools() {
    ensure_debian_packages gcc g++ make pkg-config ca-certificates
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] || {
            ensure_debian_packages curl
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
        }
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy 2>/dev/null || true
}

# Where the test tools built from the Rust registry (cargo-deb, cargo-fuzz, tansu) are
# installed once per machine, like the Debian packages: outside the clone, so a fresh clone
# (CI's) does not build them again (tansu alone takes about 7 minutes). RECWATCH_TOOLS sets it.
tools_root() {
    echo "${RECWATCH_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/recwatch/tools}/$1"
}

# A binary crate NAME at VERSION from the Rust registry, installed once into
# $(tools_root NAME) with any further `cargo install` arguments. Prints the binary's path.
ensure_cargo_tool() {
    local name=$1 version=$2 root
    shift 2
    root=$(tools_root "$name")
    if [ ! -x "$root/bin/$name" ] || ! "$root/bin/$name" --version 2>/dev/null | grep -q "$version"; then
        echo "== installing $name $version into $root" >&2
        # `|| return`: callers take the path from `$(…)`, where `set -e` does not reach.
        cargo install --quiet --locked "$name" --version "$version" --root "$root" "$@" >&2 || return
    fi
    echo "$root/bin/$name"
}

# cargo-deb for the package (scripts/package, tests/package.rs). Prints the binary's path.
ensure_cargo_deb() { ensure_cargo_tool cargo-deb 3.8.0; }

# The tansu Kafka-compatible broker (crates.io, Apache-2.0) for tests/kafka.rs's real-broker
# test, once into $(tools_root tansu) (a debug build: about 7 minutes on an idle 2-core machine;
# a release build takes much longer). Exports its path as RECWATCH_TANSU; an already set
# RECWATCH_TANSU that names an executable is used as it is.
TANSU_VERSION=0.6.0

ensure_tansu() {
    if [ -n "${RECWATCH_TANSU:-}" ] && [ -x "$RECWATCH_TANSU" ]; then
        export RECWATCH_TANSU
        return 0
    fi
    # --features dynostore: the default build has no storage engine (memory:// comes with it).
    RECWATCH_TANSU=$(ensure_cargo_tool tansu "$TANSU_VERSION" --features dynostore --debug)
    export RECWATCH_TANSU
}

# The nightly toolchain cargo-fuzz needs (rustup; these machines have it already).
ensure_nightly() {
    rustup toolchain list 2>/dev/null | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
}

# cargo-fuzz for scripts/fuzz (about 2 minutes to install). Prints the binary's path.
ensure_cargo_fuzz() { ensure_cargo_tool cargo-fuzz 0.13.2; }
