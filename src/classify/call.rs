//! Which call a recording belongs to (`[sensitive] call_id`): one call is 3–4 files, up to 10,
//! and the regulator's and the patients' unit is the call. Owns the compiled pattern and the
//! rule "without a pattern, or when it does not match, a file is its own call". Never
//! pseudonymises: the caller turns what this returns into text through
//! [`crate::privacy::Pseudonymizer`], so a call id named after a caller leaves the process only
//! as a pseudonym.

use regex::bytes::Regex;

/// The name of the capture group that holds the call id.
pub const CALL_GROUP: &str = "call";

#[derive(Debug, thiserror::Error)]
pub enum CallIdError {
    #[error("not a valid regex: {0}")]
    Regex(String),
    #[error("has no named group `(?P<call>…)` (it says which part of the path is the call)")]
    NoCallGroup,
}

/// The compiled `call_id` pattern, matched against the normalised path (after percent-decoding
/// and dot-segment removal, the same bytes the sensitive-path test sees).
#[derive(Clone, Debug, Default)]
pub struct CallIds {
    regex: Option<Regex>,
}

impl CallIds {
    /// No pattern: every file is its own call.
    pub fn none() -> CallIds {
        CallIds { regex: None }
    }

    /// Compiles `pattern`; it must have a named group `call`.
    pub fn new(pattern: &str) -> Result<CallIds, CallIdError> {
        let regex = Regex::new(pattern).map_err(|e| CallIdError::Regex(e.to_string()))?;
        if !regex.capture_names().flatten().any(|n| n == CALL_GROUP) {
            return Err(CallIdError::NoCallGroup);
        }
        Ok(CallIds { regex: Some(regex) })
    }

    /// The pattern as configured, if any (for `recwatch check`).
    pub fn pattern(&self) -> Option<&str> {
        self.regex.as_ref().map(Regex::as_str)
    }

    /// The call `path` belongs to: the text of the group `call` where the pattern matches and
    /// the group took part in the match, else the whole path (a file is its own call).
    pub fn call_of<'a>(&self, path: &'a [u8]) -> &'a [u8] {
        self.regex
            .as_ref()
            .and_then(|r| r.captures(path))
            .and_then(|c| c.name(CALL_GROUP))
            .filter(|m| !m.is_empty())
            .map_or(path, |m| m.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_group_names_the_call_and_a_file_without_a_match_is_its_own_call() {
        let ids = CallIds::new(r"call-(?P<call>\d+)-part\d+\.wav$").unwrap();
        assert_eq!(ids.call_of(b"/recordings/2019/02/18/call-17-part3.wav"), b"17");
        assert_eq!(ids.call_of(b"/recordings/2019/02/18/call-17-part1.wav"), b"17");
        assert_eq!(ids.call_of(b"/recordings/other.wav"), b"/recordings/other.wav");
        assert_eq!(CallIds::none().call_of(b"/recordings/a.wav"), b"/recordings/a.wav");
        // A directory level as the call.
        let dirs = CallIds::new(r"^/recordings/(?P<call>[^/]+)/").unwrap();
        assert_eq!(dirs.call_of(b"/recordings/4711/part2.wav"), b"4711");
        // An empty capture names no call: the file is its own.
        let empty = CallIds::new(r"x(?P<call>\d*)\.wav").unwrap();
        assert_eq!(empty.call_of(b"/r/x.wav"), b"/r/x.wav");
    }

    #[test]
    fn a_pattern_without_the_call_group_or_invalid_is_refused() {
        assert!(matches!(CallIds::new(r"call-(\d+)"), Err(CallIdError::NoCallGroup)));
        assert!(matches!(CallIds::new(r"call-(?P<id>\d+)"), Err(CallIdError::NoCallGroup)));
        assert!(matches!(CallIds::new(r"call-(?P<call>\d+"), Err(CallIdError::Regex(_))));
    }
}
