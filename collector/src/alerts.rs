//! Alerts: detections deduplicated and grouped, with states and silences.
//!
//! A [`Detection`] joins the open alert of the same rule and the same group —
//! the host for a detection rule, the `group-by` values for a correlation —
//! when its first event comes within the deduplication window after the
//! alert's last event (event time). The alert then counts one more detection,
//! adds the events (ids capped at [`AlertsConfig::max_event_ids`], the total
//! still counted) and keeps its state; otherwise a new alert opens. Resolved
//! alerts are final: a later detection opens a new one.
//!
//! States: `new` → `acknowledged` → `resolved` (or `new` → `resolved`), each
//! change with who, when and a comment. Silences (rule id and/or host, with an
//! expiry) suppress matching detections before they become alerts; suppressed
//! detections are counted (`vigie_alerts_suppressed_total`).
//!
//! Every change goes through one mutex and is written to the store before the
//! mutex is released, so the detection thread and the API never lose each
//! other's updates. Callers are blocking threads (the detection thread, or
//! `spawn_blocking` in the API).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vigie_proto::Timestamp;
use vigie_proto::event::truncate_for_log;
use vigie_store::{AlertRecord, AlertState, AlertTransition, SilenceRecord, Store, StoreError};

use crate::detect::Detection;
use crate::metrics::Metrics;

/// Bounds and windows of alert grouping.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    /// Detections of the same rule and group within this window (event time) aggregate.
    pub dedup_window: Duration,
    /// Event ids kept per alert (the count goes on).
    pub max_event_ids: usize,
    /// Open alerts kept in memory for grouping; past this the least recently
    /// updated stops aggregating (it stays stored and open).
    pub max_open: usize,
    /// State changes kept per alert.
    pub max_history: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            dedup_window: Duration::from_secs(3600),
            max_event_ids: 100,
            max_open: 10_000,
            max_history: 50,
        }
    }
}

/// Longest `by`/`comment` kept, in bytes.
pub const MAX_TEXT: usize = 1024;
/// Silences kept at most (expired ones are pruned a day after they expire).
pub const MAX_SILENCES: usize = 10_000;
/// How long an expired silence stays listed.
const SILENCE_KEEP_NS: i64 = 24 * 3600 * 1_000_000_000;

/// Why a state change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("no alert {0}")]
    NotFound(u64),
    #[error(
        "alert {id} is {from}; it cannot become {to} (allowed: new → acknowledged → resolved, or new → resolved)"
    )]
    Conflict {
        id: u64,
        from: &'static str,
        to: &'static str,
    },
    #[error("`by` is required: say who is changing the alert")]
    NoActor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Book {
    next_id: u64,
    /// Dedup key → the open alert aggregating it.
    open: HashMap<String, AlertRecord>,
    silences: Vec<SilenceRecord>,
    next_silence: u64,
}

/// The alert book of a collector.
pub struct Alerts {
    store: Store,
    cfg: AlertsConfig,
    metrics: Arc<Metrics>,
    book: Mutex<Book>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").field("cfg", &self.cfg).finish()
    }
}

fn dedup_key(d: &Detection) -> String {
    let mut k = d.rule_id.clone();
    k.push('\x1f');
    if d.correlation {
        for (_, v) in &d.group {
            k.push_str(v);
            k.push('\x1f');
        }
    } else {
        k.push_str(&d.host);
    }
    k
}

fn key_of(a: &AlertRecord) -> String {
    let mut k = a.rule_id.clone();
    k.push('\x1f');
    if a.correlation {
        for (_, v) in &a.group {
            k.push_str(v);
            k.push('\x1f');
        }
    } else {
        k.push_str(&a.host);
    }
    k
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Alerts {
    /// Opens the book: next ids, silences, and the recent open alerts to keep grouping into.
    pub fn open(
        store: Store,
        cfg: AlertsConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Alerts, StoreError> {
        let next_id = store.last_alert_id()?.map_or(1, |i| i + 1);
        let next_silence = store.last_silence_id()?.map_or(1, |i| i + 1);
        let silences = store.list_silences()?;
        let mut open = HashMap::new();
        for a in store.list_alerts(None, cfg.max_open)? {
            if a.state != AlertState::Resolved {
                open.entry(key_of(&a)).or_insert(a);
            }
        }
        Ok(Alerts {
            store,
            cfg,
            metrics,
            book: Mutex::new(Book {
                next_id,
                open,
                silences,
                next_silence,
            }),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Book>, StoreError> {
        self.book.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Records detections; returns the alerts they opened (to notify).
    pub fn record(
        &self,
        dets: &[Detection],
        now: Timestamp,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let mut book = self.lock()?;
        let mut dirty: Vec<String> = Vec::new();
        let mut created = Vec::new();
        let window = self.cfg.dedup_window.as_nanos().min(i64::MAX as u128) as i64;
        for d in dets {
            if book.silences.iter().any(|s| silences(s, d, now)) {
                self.metrics.alerts_silenced.fetch_add(1, Relaxed);
                continue;
            }
            let key = dedup_key(d);
            let joins = book.open.get(&key).is_some_and(|a| {
                a.state != AlertState::Resolved && d.first.0 <= a.last_seen.0.saturating_add(window)
            });
            if joins {
                if let Some(a) = book.open.get_mut(&key) {
                    a.count += 1;
                    a.event_count += d.event_ids.len() as u64;
                    for id in &d.event_ids {
                        if a.event_ids.len() >= self.cfg.max_event_ids {
                            break;
                        }
                        a.event_ids.push(id.clone());
                    }
                    a.first_seen = a.first_seen.min(d.first);
                    a.last_seen = a.last_seen.max(d.last);
                    a.updated_at = now;
                    if a.host != d.host {
                        a.host.clear();
                    }
                    a.severity = a.severity.max(d.severity);
                }
                self.metrics.alerts_updated.fetch_add(1, Relaxed);
            } else {
                let id = book.next_id;
                book.next_id += 1;
                let a = AlertRecord {
                    id,
                    rule_id: d.rule_id.clone(),
                    rule_title: d.title.clone(),
                    severity: d.severity,
                    tags: d.tags.clone(),
                    test: d.test,
                    correlation: d.correlation,
                    host: d.host.clone(),
                    group: d.group.clone(),
                    first_seen: d.first,
                    last_seen: d.last,
                    created_at: now,
                    updated_at: now,
                    count: 1,
                    event_count: d.event_ids.len() as u64,
                    event_ids: d
                        .event_ids
                        .iter()
                        .take(self.cfg.max_event_ids)
                        .cloned()
                        .collect(),
                    state: AlertState::New,
                    history: Vec::new(),
                };
                self.metrics.alerts_raised[a.severity as usize].fetch_add(1, Relaxed);
                tracing::info!(alert = id, rule = %truncate_for_log(&a.rule_id), title = %truncate_for_log(&a.rule_title), severity = a.severity.as_str(), host = %truncate_for_log(&a.host), test = a.test, "alert raised");
                created.push(key.clone());
                book.open.insert(key.clone(), a);
            }
            if !dirty.contains(&key) {
                dirty.push(key);
            }
        }
        let records: Vec<AlertRecord> = dirty
            .iter()
            .filter_map(|k| book.open.get(k).cloned())
            .collect();
        if !records.is_empty() {
            self.store.put_alerts(&records, true)?;
        }
        let new: Vec<AlertRecord> = created
            .iter()
            .filter_map(|k| book.open.get(k).cloned())
            .collect();
        // Bounded memory: forget the least recently updated open alerts.
        while book.open.len() > self.cfg.max_open {
            let Some(k) = book
                .open
                .iter()
                .min_by_key(|(_, a)| a.updated_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            book.open.remove(&k);
        }
        Ok(new)
    }

    /// Moves an alert to `to` (acknowledged or resolved), recording who, when and why.
    pub fn transition(
        &self,
        id: u64,
        to: AlertState,
        by: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<AlertRecord, TransitionError> {
        if by.trim().is_empty() {
            return Err(TransitionError::NoActor);
        }
        let mut book = self.lock()?;
        let key = book
            .open
            .iter()
            .find(|(_, a)| a.id == id)
            .map(|(k, _)| k.clone());
        let mut a = match key.as_ref().and_then(|k| book.open.get(k)) {
            Some(a) => a.clone(),
            None => self
                .store
                .get_alert(id)?
                .ok_or(TransitionError::NotFound(id))?,
        };
        let ok = matches!(
            (a.state, to),
            (AlertState::New, AlertState::Acknowledged)
                | (AlertState::New, AlertState::Resolved)
                | (AlertState::Acknowledged, AlertState::Resolved)
        );
        if !ok {
            return Err(TransitionError::Conflict {
                id,
                from: a.state.as_str(),
                to: to.as_str(),
            });
        }
        a.state = to;
        a.updated_at = now;
        a.history.push(AlertTransition {
            state: to,
            by: clip(by.trim()),
            at: now,
            comment: clip(comment),
        });
        if a.history.len() > self.cfg.max_history {
            let extra = a.history.len() - self.cfg.max_history;
            a.history.drain(..extra);
        }
        self.store.put_alerts(std::slice::from_ref(&a), true)?;
        if let Some(k) = key {
            if to == AlertState::Resolved {
                book.open.remove(&k);
            } else {
                book.open.insert(k, a.clone());
            }
        }
        tracing::info!(alert = id, state = to.as_str(), by = %truncate_for_log(by), "alert state changed");
        Ok(a)
    }

    pub fn get(&self, id: u64) -> Result<Option<AlertRecord>, StoreError> {
        self.store.get_alert(id)
    }

    /// Newest first: alerts in `state` (any when `None`) updated at or after
    /// `since`, at most `limit`, looking at no more than `scan` alerts.
    pub fn list(
        &self,
        state: Option<AlertState>,
        since: Option<Timestamp>,
        before: Option<u64>,
        limit: usize,
        scan: usize,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = before;
        let mut seen = 0;
        while out.len() < limit && seen < scan {
            let page = self.store.list_alerts(cursor, 500.min(scan - seen))?;
            if page.is_empty() {
                break;
            }
            seen += page.len();
            cursor = page.last().map(|a| a.id);
            for a in page {
                if state.is_some_and(|s| s != a.state) || since.is_some_and(|t| a.updated_at < t) {
                    continue;
                }
                out.push(a);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Adds a silence (at least one of rule id and host).
    pub fn add_silence(
        &self,
        rule_id: Option<String>,
        host: Option<String>,
        by: &str,
        comment: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<SilenceRecord, StoreError> {
        let mut book = self.lock()?;
        let stale: Vec<u64> = book
            .silences
            .iter()
            .filter(|s| s.expires_at.0.saturating_add(SILENCE_KEEP_NS) < now.0)
            .map(|s| s.id)
            .collect();
        for id in stale {
            self.store.delete_silence(id)?;
            book.silences.retain(|s| s.id != id);
        }
        if book.silences.len() >= MAX_SILENCES {
            return Err(StoreError::InvalidRequest(format!(
                "there are already {MAX_SILENCES} silences; delete some with DELETE /api/v1/silences/{{id}}"
            )));
        }
        let s = SilenceRecord {
            id: book.next_silence,
            rule_id: rule_id.map(|s| clip(&s)),
            host: host.map(|s| clip(&s)),
            created_by: clip(by),
            comment: clip(comment),
            created_at: now,
            expires_at,
        };
        self.store.put_silence(&s)?;
        book.next_silence += 1;
        book.silences.push(s.clone());
        tracing::info!(silence = s.id, rule = ?s.rule_id, host = ?s.host, expires_at = %s.expires_at, by = %truncate_for_log(by), "silence added");
        Ok(s)
    }

    pub fn delete_silence(&self, id: u64) -> Result<bool, StoreError> {
        let mut book = self.lock()?;
        let found = self.store.delete_silence(id)?;
        book.silences.retain(|s| s.id != id);
        Ok(found)
    }

    pub fn silences(&self) -> Result<Vec<SilenceRecord>, StoreError> {
        Ok(self.lock()?.silences.clone())
    }
}

fn silences(s: &SilenceRecord, d: &Detection, now: Timestamp) -> bool {
    now < s.expires_at
        && s.rule_id.as_deref().is_none_or(|r| r == d.rule_id)
        && s.host.as_deref().is_none_or(|h| h == d.host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_store::{AlertSeverity, StoreConfig};

    fn det(rule: &str, host: &str, ids: &[&str], t: i64) -> Detection {
        Detection {
            rule_id: rule.into(),
            title: format!("title of {rule}"),
            severity: AlertSeverity::High,
            tags: vec!["attack.t1110".into()],
            test: false,
            correlation: false,
            host: host.into(),
            group: Vec::new(),
            event_ids: ids.iter().map(|s| s.to_string()).collect(),
            first: Timestamp::from_secs(t),
            last: Timestamp::from_secs(t),
        }
    }

    fn book(dir: &std::path::Path, cfg: AlertsConfig) -> Alerts {
        let store = Store::open(dir, StoreConfig::default()).expect("store");
        Alerts::open(store, cfg, Arc::new(Metrics::default())).expect("alerts")
    }

    #[test]
    fn dedup_groups_by_rule_and_host_within_the_window() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AlertsConfig {
            dedup_window: Duration::from_secs(600),
            max_event_ids: 3,
            ..Default::default()
        };
        let a = book(dir.path(), cfg.clone());
        let now = Timestamp::from_secs(10_000);
        let new = a
            .record(
                &[
                    det("r1", "web1", &["e1"], 100),
                    det("r1", "web1", &["e2"], 200),
                    det("r1", "web2", &["e3"], 200),
                    det("r2", "web1", &["e4"], 200),
                ],
                now,
            )
            .expect("record");
        assert_eq!(new.len(), 3, "r1@web1, r1@web2, r2@web1");
        assert_eq!(new[0].count, 2);
        assert_eq!(new[0].event_ids, ["e1", "e2"]);
        // More detections: the same alert grows, ids are capped, the count goes on.
        let new = a
            .record(&[det("r1", "web1", &["e5", "e6"], 300)], now)
            .expect("record");
        assert!(new.is_empty());
        let r = a
            .get(new_id(&a, "r1", "web1"))
            .expect("get")
            .expect("alert");
        assert_eq!((r.count, r.event_count), (3, 4));
        assert_eq!(r.event_ids, ["e1", "e2", "e5"]);
        assert_eq!(r.last_seen, Timestamp::from_secs(300));
        // Past the window: a new alert.
        let new = a
            .record(&[det("r1", "web1", &["e7"], 300 + 601)], now)
            .expect("record");
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].id, 4);

        // Survives a reopen: ids continue, grouping continues into the open alert.
        drop(a);
        let a = book(dir.path(), cfg);
        let new = a
            .record(&[det("r1", "web1", &["e8"], 950)], now)
            .expect("record");
        assert!(new.is_empty());
        assert_eq!(a.get(4).expect("get").expect("4").count, 2);
        let new = a
            .record(&[det("r3", "web1", &["e9"], 950)], now)
            .expect("record");
        assert_eq!(new[0].id, 5);
    }

    fn new_id(a: &Alerts, rule: &str, host: &str) -> u64 {
        a.list(None, None, None, 100, 1000)
            .expect("list")
            .into_iter()
            .find(|x| x.rule_id == rule && x.host == host)
            .expect("alert")
            .id
    }

    #[test]
    fn states_history_and_resolved_alerts_are_final() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = book(dir.path(), AlertsConfig::default());
        let now = Timestamp::from_secs(10_000);
        let id = a
            .record(&[det("r1", "web1", &["e1"], 100)], now)
            .expect("r")[0]
            .id;
        assert!(matches!(
            a.transition(id, AlertState::Acknowledged, " ", "", now),
            Err(TransitionError::NoActor)
        ));
        let r = a
            .transition(id, AlertState::Acknowledged, "alice", "looking", now)
            .expect("ack");
        assert_eq!(r.state, AlertState::Acknowledged);
        let err = a
            .transition(id, AlertState::Acknowledged, "alice", "", now)
            .expect_err("twice");
        assert!(err.to_string().contains("is acknowledged"), "{err}");
        // An acknowledged alert keeps aggregating.
        assert!(
            a.record(&[det("r1", "web1", &["e2"], 110)], now)
                .expect("r")
                .is_empty()
        );
        let r = a.get(id).expect("get").expect("alert");
        assert_eq!((r.count, r.state), (2, AlertState::Acknowledged));
        let r = a
            .transition(id, AlertState::Resolved, "bob", "fixed", now)
            .expect("resolve");
        assert_eq!(r.history.len(), 2);
        assert_eq!(r.history[1].by, "bob");
        assert_eq!(r.history[1].comment, "fixed");
        assert!(
            a.transition(id, AlertState::Acknowledged, "x", "", now)
                .is_err()
        );
        // After resolution the same detection opens a new alert.
        let new = a
            .record(&[det("r1", "web1", &["e3"], 120)], now)
            .expect("r");
        assert_eq!(new.len(), 1);
        assert_ne!(new[0].id, id);
        assert!(matches!(
            a.transition(999, AlertState::Resolved, "x", "", now),
            Err(TransitionError::NotFound(999))
        ));
        let listed = a
            .list(Some(AlertState::Resolved), None, None, 10, 100)
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
    }

    #[test]
    fn silences_suppress_until_they_expire() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = book(dir.path(), AlertsConfig::default());
        let now = Timestamp::from_secs(10_000);
        let s = a
            .add_silence(
                Some("r1".into()),
                Some("web1".into()),
                "alice",
                "maintenance",
                now,
                Timestamp::from_secs(10_100),
            )
            .expect("silence");
        let new = a
            .record(
                &[det("r1", "web1", &["e1"], 1), det("r1", "web2", &["e2"], 1)],
                now,
            )
            .expect("record");
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].host, "web2");
        assert_eq!(a.metrics.alerts_silenced.load(Relaxed), 1);
        // Expired: no longer suppresses.
        let later = Timestamp::from_secs(10_100);
        assert_eq!(
            a.record(&[det("r1", "web1", &["e3"], 1)], later)
                .expect("r")
                .len(),
            1
        );
        // A day after it expired, adding another silence prunes it.
        let next_day = Timestamp::from_secs(10_100 + 24 * 3600 + 1);
        let s2 = a
            .add_silence(
                None,
                Some("web9".into()),
                "bob",
                "",
                next_day,
                Timestamp::from_secs(i64::MAX / 2_000_000_000),
            )
            .expect("silence");
        let left: Vec<u64> = a.silences().expect("list").iter().map(|x| x.id).collect();
        assert_eq!(left, [s2.id]);
        assert!(!a.delete_silence(s.id).expect("already pruned"));
        assert!(a.delete_silence(s2.id).expect("delete"));
        assert!(a.silences().expect("list").is_empty());
    }

    #[test]
    fn correlations_group_by_their_group_by_values() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = book(dir.path(), AlertsConfig::default());
        let now = Timestamp::from_secs(10_000);
        let corr = |ip: &str, host: &str| Detection {
            correlation: true,
            group: vec![("source.ip".into(), ip.into())],
            ..det("c1", host, &["a", "b", "c"], 100)
        };
        let new = a
            .record(
                &[
                    corr("192.0.2.1", "web1"),
                    corr("192.0.2.1", "web2"),
                    corr("192.0.2.9", "web1"),
                ],
                now,
            )
            .expect("record");
        assert_eq!(new.len(), 2);
        assert_eq!(new[0].count, 2);
        assert_eq!(new[0].event_count, 6);
        assert_eq!(new[0].host, "", "events from several hosts");
    }
}
