//! Sans-IO shipping logic: what the agent's shipper should do next, with time passed in.
//!
//! [`Backoff`] spaces reconnects; [`ShipWindow`] tracks batches in flight and turns
//! the collector's replies into decisions. The shipper task does the IO and asks
//! these types what to do, so the logic is tested on a virtual clock.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::{Epoch, Seq};

/// Exponential backoff with a cap and caller-provided jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// Delay before the next attempt. `jitter` in `0.0..1.0` spreads agents apart
    /// (the delay is scaled by `0.5 + jitter / 2`).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let capped = exp.min(self.max);
        capped.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// What the shipper should do after a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Everything below `stored_end` is durable: the spool may release it.
    Release { stored_end: Seq },
    /// Rewind: send again from `from`.
    Rewind { from: Seq },
    /// Nothing to do.
    Nothing,
}

/// Batches in flight for one epoch, keyed by first sequence.
#[derive(Clone, Debug)]
pub struct ShipWindow {
    pub epoch: Epoch,
    /// Everything below this is known durable at the collector.
    pub acked_end: Seq,
    in_flight: BTreeMap<u64, Seq>,
    pub max_in_flight: usize,
}

impl ShipWindow {
    pub fn new(epoch: Epoch, acked_end: Seq, max_in_flight: usize) -> Self {
        ShipWindow {
            epoch,
            acked_end,
            in_flight: BTreeMap::new(),
            max_in_flight,
        }
    }

    pub fn can_send(&self) -> bool {
        self.in_flight.len() < self.max_in_flight
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Next sequence to send: after the last batch in flight, or the acked end.
    pub fn next_to_send(&self) -> Seq {
        self.in_flight
            .values()
            .next_back()
            .copied()
            .unwrap_or(self.acked_end)
            .max(self.acked_end)
    }

    pub fn sent(&mut self, first: Seq, end: Seq) {
        self.in_flight.insert(first.0, end);
    }

    /// An ack for our epoch.
    pub fn on_ack(&mut self, epoch: Epoch, stored_end: Seq) -> Decision {
        if epoch != self.epoch {
            return Decision::Nothing;
        }
        self.in_flight.retain(|_, end| *end > stored_end);
        if stored_end > self.acked_end {
            self.acked_end = stored_end;
            return Decision::Release { stored_end };
        }
        Decision::Nothing
    }

    /// The collector saw a gap: forget what is in flight and resend from `from`.
    pub fn on_resend(&mut self, epoch: Epoch, from: Seq) -> Decision {
        if epoch != self.epoch {
            return Decision::Nothing;
        }
        self.in_flight.clear();
        if from > self.acked_end {
            self.acked_end = from;
        }
        Decision::Rewind {
            from: self.acked_end,
        }
    }

    /// The connection dropped: everything in flight is unknown and will be resent.
    pub fn on_disconnect(&mut self) {
        self.in_flight.clear();
    }
}

/// Compares the collector's stored end for our epoch with our spool's next sequence:
/// if the collector holds sequences we have not produced, this spool was rolled
/// back (VM snapshot restore, copied disk) and must start a new epoch.
pub fn detect_rollback(collector_stored_end: Seq, spool_next_seq: Seq) -> bool {
    collector_stored_end > spool_next_seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        for _ in 0..20 {
            assert!(b.next_delay(1.0) <= Duration::from_secs(5));
        }
        assert_eq!(b.next_delay(0.0), Duration::from_millis(2500));
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }

    #[test]
    fn window_acks_and_resends() {
        let mut w = ShipWindow::new(Epoch(1), Seq(0), 2);
        w.sent(Seq(0), Seq(10));
        w.sent(Seq(10), Seq(20));
        assert!(!w.can_send());
        assert_eq!(w.next_to_send(), Seq(20));
        assert_eq!(w.on_ack(Epoch(2), Seq(10)), Decision::Nothing);
        assert_eq!(
            w.on_ack(Epoch(1), Seq(10)),
            Decision::Release {
                stored_end: Seq(10)
            }
        );
        assert!(w.can_send());
        assert_eq!(w.on_ack(Epoch(1), Seq(5)), Decision::Nothing);
        assert_eq!(
            w.on_resend(Epoch(1), Seq(10)),
            Decision::Rewind { from: Seq(10) }
        );
        assert_eq!(w.next_to_send(), Seq(10));
        assert!(detect_rollback(Seq(50), Seq(20)));
        assert!(!detect_rollback(Seq(20), Seq(20)));
    }
}
