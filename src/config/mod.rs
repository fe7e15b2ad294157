//! Configuration: the TOML file is read into a raw serde view ([`raw`], unknown keys
//! rejected, the one place defaults are written), then *built* ([`build`]) into a validated,
//! compiled [`Config`] made of each stage's own settings type (the stages define them; this
//! module only fills them in). `recwatch check` runs exactly this path and prints
//! [`Config::describe`], so what `check` accepts, `run` and `replay` accept. Errors
//! ([`ConfigError`]) name file, line and key. Only the wiring (`daemon`, `pipeline`, the CLI)
//! imports this module; stages never do. Never reads logs.

mod build;
mod describe;
mod error;
mod raw;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use raw::DEFAULT_RULES_TOML;

use crate::alerting::AlertingSettings;
use crate::classify::ClassifySettings;
use crate::detect::rule::Rule;
use crate::detect::EngineSettings;
use crate::http::HttpSettings;
use crate::privacy::Pseudonymizer;
use crate::source::{SourceSettings, TailSettings};
use crate::store::StoreSettings;

/// Rules per config; the detector tests them as one 128-bit mask.
pub const MAX_RULES: usize = 128;

/// The validated, compiled configuration: one settings value per stage, plus the rules and
/// the pseudonym key (which several stages share).
pub struct Config {
    pub file: PathBuf,
    /// `[store]`.
    pub store: StoreSettings,
    /// `[sensitive]` and `[networks]`, compiled.
    pub classify: ClassifySettings,
    /// `[[source]]` in config order, then the command line's extra sources.
    pub sources: Vec<SourceSettings>,
    /// `[tail]`.
    pub tail: TailSettings,
    /// `[engine]`.
    pub engine: EngineSettings,
    /// `[[rule]]`, enabled ones only; the built-in rules when the file has none.
    pub rules: Vec<Rule>,
    /// `[http]` (but `external_url`, which is the alerts').
    pub http: HttpSettings,
    /// `[[receiver]]` and `http.external_url`.
    pub alerting: AlertingSettings,
    /// `privacy.pseudonym_key_file`, resolved; None: the state directory's key is used.
    pub pseudonym_key_file: Option<PathBuf>,
    /// The key loaded from `pseudonym_key_file` (checked here, so `check` reports a bad one).
    pub pseudonyms: Option<Pseudonymizer>,
}

/// What the command line sets over the file (`recwatch run --listen/--state-dir/--workers/--watch`).
/// Applied while building, so what is derived from them (the default `external_url` from the
/// listen address) follows.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub store_dir: Option<PathBuf>,
    /// At least 1 is used.
    pub workers: Option<usize>,
    /// Appended after the file's sources, unless one of that name exists.
    pub sources: Vec<SourceSettings>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Config::load_with(file, &Overrides::default())
    }

    /// [`Config::load`] with the command line's overrides.
    pub fn load_with(file: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::file(file, format!("cannot read: {e}")))?;
        Config::from_toml_with(file, &text, overrides)
    }

    /// Parses and validates config text; `file` is used in messages and to resolve relative paths.
    pub fn from_toml(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with(file, text, &Overrides::default())
    }

    fn from_toml_with(file: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let locator = error::Locator::new(text, true);
        let raw: raw::RawConfig = raw::parse(file, &locator, text)?;
        build::build(&build::Builder { file, locator: &locator }, raw, overrides)
    }

    /// The config of a daemon that listens on `bound` (`http.listen` may ask for port 0):
    /// `listen` becomes it, and so does the default external URL derived from it (a
    /// configured one is kept).
    pub fn bound_to(&mut self, bound: std::net::SocketAddr) {
        if self.alerting.external_url == default_external_url(self.http.listen) {
            self.alerting.external_url = default_external_url(bound);
        }
        self.http.listen = bound;
    }
}

/// The alerts' external URL when none is configured: the API's own listen address.
fn default_external_url(listen: std::net::SocketAddr) -> String {
    format!("http://{listen}")
}
