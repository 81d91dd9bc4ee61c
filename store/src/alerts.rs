//! Small registries of the detection side: alerts, silences and the
//! notification delivery log. Keys are record ids (`u64` big-endian, so that
//! key order is id order); values are bincode records like the other
//! registries. The collector assigns ids (one past [`Store::last_alert_id`] and
//! friends) and serializes its own updates.

use rocksdb::{WriteBatch, WriteOptions};

use crate::store::{CF_ALERTS, CF_DELIVERIES, CF_SILENCES, Store, decode_record, encode_record};
use crate::types::{AlertRecord, DeliveryRecord, SilenceRecord, StoreError};

fn opts(sync: bool) -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    wo
}

impl Store {
    /// Writes alerts (new or updated) in one write; `sync` makes it durable before returning.
    pub fn put_alerts(&self, alerts: &[AlertRecord], sync: bool) -> Result<(), StoreError> {
        let cf = self.inner.cf(CF_ALERTS)?;
        let mut wb = WriteBatch::default();
        for a in alerts {
            wb.put_cf(cf, a.id.to_be_bytes(), encode_record("alert record", a)?);
        }
        self.inner.db.write_opt(wb, &opts(sync))?;
        Ok(())
    }

    pub fn get_alert(&self, id: u64) -> Result<Option<AlertRecord>, StoreError> {
        self.get_u64(CF_ALERTS, id, "alert record")
    }

    /// At most `limit` alerts with an id below `before` (all when `None`), newest first.
    pub fn list_alerts(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        self.newest_first(CF_ALERTS, before, limit, "alert record")
    }

    /// The highest alert id stored.
    pub fn last_alert_id(&self) -> Result<Option<u64>, StoreError> {
        self.last_id(CF_ALERTS)
    }

    pub fn put_silence(&self, s: &SilenceRecord) -> Result<(), StoreError> {
        self.inner.db.put_cf_opt(
            self.inner.cf(CF_SILENCES)?,
            s.id.to_be_bytes(),
            encode_record("silence record", s)?,
            &opts(true),
        )?;
        Ok(())
    }

    /// Removes a silence; false when there was none with that id.
    pub fn delete_silence(&self, id: u64) -> Result<bool, StoreError> {
        let cf = self.inner.cf(CF_SILENCES)?;
        if self.inner.db.get_pinned_cf(cf, id.to_be_bytes())?.is_none() {
            return Ok(false);
        }
        self.inner
            .db
            .delete_cf_opt(cf, id.to_be_bytes(), &opts(true))?;
        Ok(true)
    }

    /// Every silence, oldest first (expired ones too, until deleted).
    pub fn list_silences(&self) -> Result<Vec<SilenceRecord>, StoreError> {
        let mut v = self.newest_first(CF_SILENCES, None, usize::MAX, "silence record")?;
        v.reverse();
        Ok(v)
    }

    pub fn last_silence_id(&self) -> Result<Option<u64>, StoreError> {
        self.last_id(CF_SILENCES)
    }

    /// Appends to the delivery log, keeping only its newest `keep` entries.
    pub fn append_delivery(&self, d: &DeliveryRecord, keep: u64) -> Result<(), StoreError> {
        let cf = self.inner.cf(CF_DELIVERIES)?;
        let mut wb = WriteBatch::default();
        wb.put_cf(cf, d.id.to_be_bytes(), encode_record("delivery record", d)?);
        if d.id >= keep {
            let end = d.id - keep + 1;
            wb.delete_range_cf(cf, 0u64.to_be_bytes(), end.to_be_bytes());
        }
        self.inner.db.write_opt(wb, &opts(false))?;
        Ok(())
    }

    /// At most `limit` log entries with an id below `before`, newest first.
    pub fn list_deliveries(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.newest_first(CF_DELIVERIES, before, limit, "delivery record")
    }

    pub fn last_delivery_id(&self) -> Result<Option<u64>, StoreError> {
        self.last_id(CF_DELIVERIES)
    }

    fn get_u64<T: bincode::Decode<()>>(
        &self,
        cf: &'static str,
        id: u64,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        match self
            .inner
            .db
            .get_pinned_cf(self.inner.cf(cf)?, id.to_be_bytes())?
        {
            Some(v) => Ok(Some(decode_record(what, &v)?)),
            None => Ok(None),
        }
    }

    fn newest_first<T: bincode::Decode<()>>(
        &self,
        cf: &'static str,
        before: Option<u64>,
        limit: usize,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut it = self.inner.db.raw_iterator_cf(self.inner.cf(cf)?);
        match before {
            Some(0) => return Ok(Vec::new()),
            Some(b) => it.seek_for_prev((b - 1).to_be_bytes()),
            None => it.seek_to_last(),
        }
        let mut out = Vec::new();
        while it.valid() && out.len() < limit {
            if let Some(v) = it.value() {
                out.push(decode_record(what, v)?);
            }
            it.prev();
        }
        it.status()?;
        Ok(out)
    }

    fn last_id(&self, cf: &'static str) -> Result<Option<u64>, StoreError> {
        let mut it = self.inner.db.raw_iterator_cf(self.inner.cf(cf)?);
        it.seek_to_last();
        it.status()?;
        match it.key() {
            Some(k) => {
                let k: [u8; 8] = k
                    .try_into()
                    .map_err(|_| StoreError::corrupt("registry key", "not 8 bytes"))?;
                Ok(Some(u64::from_be_bytes(k)))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use vigie_proto::Timestamp;

    use crate::types::*;
    use crate::{Store, StoreConfig};

    fn alert(id: u64) -> AlertRecord {
        AlertRecord {
            id,
            rule_id: format!("rule-{id}"),
            rule_title: "t".into(),
            severity: AlertSeverity::High,
            tags: vec!["attack.t1110".into()],
            test: false,
            correlation: true,
            host: "web1".into(),
            group: vec![("source.ip".into(), "192.0.2.1".into())],
            first_seen: Timestamp(1),
            last_seen: Timestamp(2),
            created_at: Timestamp(3),
            updated_at: Timestamp(4),
            count: 1,
            event_count: 5,
            event_ids: vec!["a-b-1".into()],
            state: AlertState::New,
            history: Vec::new(),
        }
    }

    #[test]
    fn alerts_silences_and_deliveries_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let s = Store::open(dir.path(), StoreConfig::default()).expect("open");
            assert_eq!(s.last_alert_id().expect("last"), None);
            assert!(s.list_alerts(None, 10).expect("list").is_empty());
            s.put_alerts(&(1..=300).map(alert).collect::<Vec<_>>(), true)
                .expect("put");
            let mut a = alert(7);
            a.state = AlertState::Acknowledged;
            a.history.push(AlertTransition {
                state: AlertState::Acknowledged,
                by: "alice".into(),
                at: Timestamp(9),
                comment: "looking".into(),
            });
            s.put_alerts(std::slice::from_ref(&a), true)
                .expect("update");
            s.put_silence(&SilenceRecord {
                id: 1,
                rule_id: Some("r".into()),
                host: None,
                created_by: "bob".into(),
                comment: String::new(),
                created_at: Timestamp(1),
                expires_at: Timestamp(100),
            })
            .expect("silence");
            for id in 0..30 {
                s.append_delivery(
                    &DeliveryRecord {
                        id,
                        at: Timestamp(id as i64),
                        channel: "mail".into(),
                        alert_id: Some(id),
                        test: false,
                        outcome: DeliveryOutcome::Delivered,
                        attempts: 1,
                        detail: String::new(),
                    },
                    10,
                )
                .expect("append");
            }
        }
        let s = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        assert_eq!(s.last_alert_id().expect("last"), Some(300));
        let got = s.get_alert(7).expect("get").expect("alert 7");
        assert_eq!(got.state, AlertState::Acknowledged);
        assert_eq!(got.history[0].by, "alice");
        assert_eq!(s.get_alert(301).expect("get"), None);
        // Newest first, paged with `before`.
        let page: Vec<u64> = s
            .list_alerts(None, 3)
            .expect("list")
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(page, [300, 299, 298]);
        let page: Vec<u64> = s
            .list_alerts(Some(3), 10)
            .expect("list")
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(page, [2, 1]);
        assert!(s.list_alerts(Some(0), 10).expect("list").is_empty());
        // Silences.
        assert_eq!(s.list_silences().expect("silences").len(), 1);
        assert_eq!(s.last_silence_id().expect("id"), Some(1));
        assert!(s.delete_silence(1).expect("delete"));
        assert!(!s.delete_silence(1).expect("delete again"));
        assert!(s.list_silences().expect("silences").is_empty());
        // The delivery log keeps its newest entries only.
        let log: Vec<u64> = s
            .list_deliveries(None, 100)
            .expect("log")
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(log, (20..30).rev().collect::<Vec<_>>());
        assert_eq!(s.last_delivery_id().expect("id"), Some(29));
    }
}
