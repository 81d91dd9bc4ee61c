//! The user-facing web UI and public REST API: accounts, MFA, RBAC, audit log,
//! log explorer, alerts, orchestration jobs, help pages.
//!
//! Owns: everything a person sees in a browser. Never opens the event store: it
//! reaches events through the collector management API.
//!
//! Until the full dashboard lands, `vigie up` serves a status page from the `vigie` binary.
