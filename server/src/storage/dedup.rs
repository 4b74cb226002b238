//! The producer-dedup window shared by every log implementation: which
//! record ids were appended recently, and at which offset.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Remembers record ids appended within the last `window_ms` milliseconds.
///
/// Expiry is by append time, which never decreases along a log, so the
/// oldest entries are always at the front of `order`.
#[derive(Debug, Default)]
pub(crate) struct DedupWindow {
    /// How long an id is remembered; zero disables dedup.
    window_ms: i64,
    /// id -> (offset, append time) of the original record. aHash rather
    /// than SipHash: ids are hashed on every append and SipHash showed up
    /// as a large share of publish CPU.
    by_id: HashMap<Bytes, (u64, i64), ahash::RandomState>,
    /// (append time, id) in append order, for expiry.
    order: VecDeque<(i64, Bytes)>,
}

impl DedupWindow {
    /// An empty window remembering ids for `window_ms` milliseconds.
    pub(crate) fn new(window_ms: i64) -> Self {
        Self {
            window_ms,
            ..Self::default()
        }
    }

    /// Whether dedup is on at all.
    pub(crate) fn enabled(&self) -> bool {
        self.window_ms > 0
    }

    /// The oldest append time still inside the window at `now_ms`; records
    /// appended before it need not be scanned when rebuilding the window.
    pub(crate) fn horizon(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.window_ms)
    }

    /// The original (offset, append time) if `id` was appended within the
    /// window ending at `now_ms`.
    pub(crate) fn lookup(&mut self, id: &Bytes, now_ms: i64) -> Option<(u64, i64)> {
        if !self.enabled() || id.is_empty() {
            return None;
        }
        self.expire(now_ms);
        self.by_id.get(id).copied()
    }

    /// Records that `id` was stored at `offset` at `timestamp_ms`.
    pub(crate) fn insert(&mut self, id: Bytes, offset: u64, timestamp_ms: i64) {
        if !self.enabled() || id.is_empty() {
            return;
        }
        self.by_id.insert(id.clone(), (offset, timestamp_ms));
        self.order.push_back((timestamp_ms, id));
    }

    /// Forgets ids appended before the window ending at `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        let horizon = self.horizon(now_ms);
        while let Some((ts, _)) = self.order.front() {
            if *ts >= horizon {
                break;
            }
            let (ts, id) = self.order.pop_front().expect("front exists");
            // Only forget the id if this entry is still the live one.
            if self.by_id.get(&id).is_some_and(|&(_, t)| t == ts) {
                self.by_id.remove(&id);
            }
        }
    }

    /// Adds every live entry of `newer`, a window of records appended after
    /// everything in `self` (so its append times are never older), keeping
    /// `newer`'s answer for an id both hold. Used to install a window rebuilt
    /// in the background without losing ids appended meanwhile.
    pub(crate) fn merge_newer(&mut self, newer: DedupWindow) {
        let DedupWindow {
            mut by_id, order, ..
        } = newer;
        for (ts, id) in order {
            // Only the live entry of an id carries its offset.
            if let Some(&(offset, t)) = by_id.get(&id)
                && t == ts
            {
                by_id.remove(&id);
                self.insert(id, offset, ts);
            }
        }
    }

    /// Forgets ids stored at offsets below `first_offset` (deleted by retention).
    pub(crate) fn forget_below(&mut self, first_offset: u64) {
        self.by_id.retain(|_, (offset, _)| *offset >= first_offset);
    }

    /// Number of ids remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no id is remembered.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_found_inside_window_and_forgotten_after() {
        let mut w = DedupWindow::new(1_000);
        let id = Bytes::from_static(b"a");
        w.insert(id.clone(), 7, 10_000);
        assert_eq!(w.lookup(&id, 10_500), Some((7, 10_000)));
        assert_eq!(w.lookup(&id, 11_001), None);
        assert!(w.is_empty());
    }

    #[test]
    fn merge_keeps_both_windows_and_prefers_the_newer_answer() {
        let id = |s: &'static str| Bytes::from_static(s.as_bytes());
        let mut old = DedupWindow::new(1_000);
        old.insert(id("a"), 1, 10_000);
        old.insert(id("b"), 2, 10_100);
        let mut newer = DedupWindow::new(1_000);
        newer.insert(id("b"), 5, 10_200);
        newer.insert(id("c"), 6, 10_300);
        old.merge_newer(newer);
        assert_eq!(old.len(), 3);
        // At 11 150 the older entry of "b" expires, but not the newer one.
        for (key, now, want) in [
            ("a", 10_500, Some((1, 10_000))),
            ("b", 10_500, Some((5, 10_200))),
            ("c", 10_500, Some((6, 10_300))),
            ("b", 11_150, Some((5, 10_200))),
            ("a", 11_150, None),
        ] {
            assert_eq!(old.lookup(&id(key), now), want, "{key} at {now}");
        }
    }

    #[test]
    fn disabled_window_remembers_nothing() {
        let mut w = DedupWindow::new(0);
        let id = Bytes::from_static(b"a");
        w.insert(id.clone(), 1, 1);
        assert_eq!(w.lookup(&id, 1), None);
    }

    #[test]
    fn empty_id_is_never_deduplicated() {
        let mut w = DedupWindow::new(1_000);
        w.insert(Bytes::new(), 1, 1);
        assert_eq!(w.lookup(&Bytes::new(), 1), None);
    }
}
