//! Classification of a parsed line: is the path a sensitive resource, and who is the client.
//! Owns the compiled prefix/extension and CIDR tables and the settings they are built from
//! ([`ClassifySettings`]). Never keeps per-client state.

pub mod call;
pub mod client;
pub mod path;

use std::sync::Arc;

use call::CallIds;
use client::{Cidr, Networks};
use path::SensitivePaths;

/// What classification is configured with (`[sensitive]`, `[networks]`): the tables, compiled
/// once, and what they were compiled from (for `recwatch check` and the partner names).
#[derive(Clone)]
pub struct ClassifySettings {
    pub paths: Arc<SensitivePaths>,
    pub networks: Arc<Networks>,
    pub prefixes: Vec<String>,
    pub extensions: Vec<String>,
    pub case_insensitive: bool,
    pub internal: Vec<Cidr>,
    /// Partner networks by name; a partner client's `ClientClass::partner` is its position here.
    pub partners: Vec<(String, Vec<Cidr>)>,
    /// Peers whose X-Forwarded-For is believed (`[networks] trusted_proxies`).
    pub trusted_proxies: Vec<Cidr>,
    /// Host-name clients that are internal (`[networks] internal_hosts`).
    pub internal_hosts: Vec<String>,
    /// Host-name clients of partners, by the partner's position in `partners`.
    pub partner_hosts: Vec<(u16, Vec<String>)>,
    /// Which call a recording belongs to (`[sensitive] call_id`): what the scope report counts.
    pub call_ids: Arc<CallIds>,
}

impl ClassifySettings {
    /// Compiles the tables. The inputs are taken as given: the config checks them first.
    pub fn new(
        prefixes: Vec<String>,
        extensions: Vec<String>,
        case_insensitive: bool,
        internal: Vec<Cidr>,
        partners: Vec<(String, Vec<Cidr>)>,
    ) -> ClassifySettings {
        ClassifySettings {
            paths: Arc::new(SensitivePaths::new(&prefixes, &extensions, case_insensitive)),
            networks: Arc::new(Networks::new(&internal, &partners)),
            prefixes,
            extensions,
            case_insensitive,
            internal,
            partners,
            trusted_proxies: Vec::new(),
            internal_hosts: Vec::new(),
            partner_hosts: Vec::new(),
            call_ids: Arc::new(CallIds::none()),
        }
    }

    /// The same settings, believing X-Forwarded-For from `trusted_proxies` and knowing
    /// host-name clients by name (internal ones, and per partner index its own).
    pub fn with_proxies_and_hosts(
        mut self,
        trusted_proxies: Vec<Cidr>,
        internal_hosts: Vec<String>,
        partner_hosts: Vec<(u16, Vec<String>)>,
    ) -> ClassifySettings {
        self.networks = Arc::new(
            Networks::new(&self.internal, &self.partners)
                .with_trusted_proxies(&trusted_proxies)
                .with_host_names(&internal_hosts, &partner_hosts),
        );
        self.trusted_proxies = trusted_proxies;
        self.internal_hosts = internal_hosts;
        self.partner_hosts = partner_hosts;
        self
    }

    /// The partner names, in config order (what alerts show for a partner client).
    pub fn partner_names(&self) -> Vec<String> {
        self.partners.iter().map(|(n, _)| n.clone()).collect()
    }
}
