//! Integration tests of the spool against real files in temporary directories:
//! round trips, release, torn tails, random corruption, `kill -9`, space limits,
//! epoch changes and the committed golden files.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vigie_spool::{Epoch, MetaStatus, Seq, Spool, SpoolConfig, SpoolError};

fn cfg(dir: &Path, segment_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 20,
        segment_bytes,
        sync: false,
    }
}

/// Deterministic content for a seq, of varying length (0..300 bytes).
fn content(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(7919) % 300) as usize;
    format!("rec-{seq}-").bytes().cycle().take(len).collect()
}

fn append_seqs(spool: &mut Spool, n: u64) -> std::ops::Range<u64> {
    let first = spool.next_seq().0;
    let recs: Vec<Vec<u8>> = (first..first + n).map(content).collect();
    let refs: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
    let r = spool.append(&refs).unwrap();
    assert_eq!(r, first..first + n);
    r
}

type Records = Vec<(u64, Vec<u8>)>;

/// Everything readable from `from`, in chunks; returns records and skipped ranges.
fn read_all(spool: &mut Spool, from: u64, chunk: usize) -> (Records, Vec<(u64, u64)>) {
    let mut recs = Vec::new();
    let mut skipped = Vec::new();
    let mut at = Seq(from);
    loop {
        let r = spool.read(at, chunk, 4096).unwrap();
        assert!(r.next >= at, "read went backwards: {at:?} -> {:?}", r.next);
        recs.extend(r.records.into_iter().map(|(s, d)| (s.0, d)));
        skipped.extend(r.skipped.into_iter().map(|(s, e)| (s.0, e.0)));
        if r.next == at || r.next >= spool.next_seq() {
            break;
        }
        at = r.next;
    }
    (recs, skipped)
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

fn first_seq_of(name: &str) -> u64 {
    name[21..41].parse().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "spool.lock" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn round_trip_release_and_reopen_across_many_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (mut spool, report) = Spool::open(cfg(&dir, 2048)).unwrap();
    assert!(report.created);
    assert_eq!(report.meta, MetaStatus::Missing);
    assert_eq!(spool.next_seq(), Seq(0));
    let epoch = spool.epoch();
    let mut rng = StdRng::seed_from_u64(1);
    while spool.next_seq().0 < 3000 {
        append_seqs(&mut spool, rng.gen_range(1..40));
    }
    let n = spool.next_seq().0;
    assert!(
        segment_files(&dir).len() > 50,
        "{} segments",
        segment_files(&dir).len()
    );
    let stats = spool.stats();
    assert_eq!(stats.pending, n);
    assert_eq!(stats.segments, segment_files(&dir).len());

    for chunk in [1, 7, 100, 10_000] {
        let (recs, skipped) = read_all(&mut spool, 0, chunk);
        assert!(skipped.is_empty());
        assert_eq!(recs.len() as u64, n);
        for (s, d) in &recs {
            assert_eq!(*d, content(*s));
        }
    }
    // Reads from random places (the sparse index), with byte limits.
    for _ in 0..200 {
        let from = rng.gen_range(0..n);
        let r = spool.read(Seq(from), 50, 2000).unwrap();
        assert_eq!(r.records[0].0, Seq(from));
        let total: usize = r.records.iter().map(|(_, d)| d.len()).sum();
        assert!(total <= 2000 || r.records.len() == 1);
        for (i, (s, d)) in r.records.iter().enumerate() {
            assert_eq!(s.0, from + i as u64);
            assert_eq!(*d, content(s.0));
        }
        assert_eq!(r.next.0, from + r.records.len() as u64);
    }

    // Release in the middle of a segment: only whole segments below end go.
    let before = segment_files(&dir);
    let saved: Vec<Vec<u8>> = before
        .iter()
        .map(|n| fs::read(dir.join(n)).unwrap())
        .collect();
    let end = 1234;
    spool.release(Seq(end)).unwrap();
    let after = segment_files(&dir);
    assert_eq!(spool.acked_end(), Seq(end));
    for name in &before {
        let first = first_seq_of(name);
        let next_first = before
            .iter()
            .map(|n| first_seq_of(n))
            .find(|&f| f > first)
            .unwrap_or(u64::MAX);
        let gone = !after.contains(name);
        assert_eq!(
            gone,
            next_first <= end,
            "{name}: next segment starts at {next_first}"
        );
    }
    assert!(first_seq_of(&after[0]) <= end);
    // A crash after the metadata was written but before an unlink reached the disk:
    // the next open finishes the job.
    let i = before.iter().position(|n| !after.contains(n)).unwrap();
    let resurrected = before[i].clone();
    fs::write(dir.join(&resurrected), &saved[i]).unwrap();
    assert_eq!(spool.stats().pending, n - end);
    assert!(matches!(
        spool.release(Seq(n + 1)),
        Err(SpoolError::ReleaseBeyondEnd { .. })
    ));
    spool.release(Seq(10)).unwrap(); // below acked_end: nothing to do
    assert_eq!(spool.acked_end(), Seq(end));
    drop(spool);

    let (mut spool, report) = Spool::open(cfg(&dir, 2048)).unwrap();
    assert!(!report.created);
    assert_eq!(report.meta, MetaStatus::Intact);
    assert!(
        report.gaps.is_empty() && report.corrupt_records == 0 && report.truncated_tail_bytes == 0
    );
    assert!(!dir.join(&resurrected).exists());
    assert_eq!(segment_files(&dir), after);
    assert_eq!(spool.epoch(), epoch);
    assert_eq!(spool.acked_end(), Seq(end));
    assert_eq!(spool.next_seq(), Seq(n));
    let (recs, skipped) = read_all(&mut spool, end, 333);
    assert!(skipped.is_empty());
    assert_eq!(
        recs.iter().map(|r| r.0).collect::<Vec<_>>(),
        (end..n).collect::<Vec<_>>()
    );
    append_seqs(&mut spool, 5);
    spool.release(spool.next_seq()).unwrap();
    assert_eq!(spool.stats().pending, 0);
    assert_eq!(
        segment_files(&dir).len(),
        1,
        "only the active segment stays"
    );
    let r = spool.read(Seq(0), 10, 100).unwrap();
    assert!(r.skipped.is_empty());
    drop(spool);
    let (spool, _) = Spool::open(cfg(&dir, 2048)).unwrap();
    assert_eq!(spool.next_seq(), Seq(n + 5));
    assert_eq!(spool.acked_end(), Seq(n + 5));
}

#[test]
fn torn_tail_at_every_offset_loses_only_the_torn_record() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let mut c = cfg(&base, 4096);
    c.sync = true;
    let (mut spool, _) = Spool::open(c).unwrap();
    for _ in 0..10 {
        append_seqs(&mut spool, 3);
    }
    let n = spool.next_seq().0;
    drop(spool);
    let segs = segment_files(&base);
    let last = segs.last().unwrap().clone();
    let len = fs::metadata(base.join(&last)).unwrap().len();
    let last_frame = 16 + content(n - 1).len() as u64;
    let start = len - last_frame;
    for cut in start..len {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&base, &dir);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&last))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let (mut spool, report) = Spool::open(cfg(&dir, 4096)).unwrap();
        assert_eq!(report.truncated_tail_bytes, cut - start, "cut at {cut}");
        assert!(report.gaps.is_empty(), "cut at {cut}: {report:?}");
        assert_eq!(report.corrupt_records, 0);
        assert_eq!(spool.next_seq(), Seq(n - 1), "cut at {cut}");
        assert_eq!(fs::metadata(dir.join(&last)).unwrap().len(), start);
        let (recs, skipped) = read_all(&mut spool, 0, 100);
        assert!(skipped.is_empty());
        assert_eq!(recs.len() as u64, n - 1);
        assert!(recs.iter().all(|(s, d)| *d == content(*s)));
        // The spool goes on: the torn seq is reused by the next append.
        append_seqs(&mut spool, 2);
        drop(spool);
        let (mut spool, report) = Spool::open(cfg(&dir, 4096)).unwrap();
        assert_eq!(report.truncated_tail_bytes, 0);
        let (recs, _) = read_all(&mut spool, 0, 100);
        assert_eq!(recs.len() as u64, n + 1);
        assert!(recs.iter().all(|(s, d)| *d == content(*s)));
        drop(spool);
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// Random byte flips: open never fails or panics, and every appended record either
/// reads back identical or is in a reported gap (or, for damage to the last frame's
/// length or seq field, in the truncated tail).
#[test]
fn random_corruption_is_skipped_and_reported() {
    let trials: u64 = std::env::var("VIGIE_SPOOL_CORRUPT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let seed = std::env::var("VIGIE_SPOOL_CORRUPT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut spool, _) = Spool::open(cfg(&base, 700)).unwrap();
    let mut originals: Vec<Vec<u8>> = Vec::new();
    while originals.len() < 60 {
        let batch: Vec<Vec<u8>> = (0..rng.gen_range(1..6))
            .map(|_| {
                let len = rng.gen_range(0..120);
                (0..len).map(|_| rng.r#gen::<u8>()).collect()
            })
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(|r| r.as_slice()).collect();
        spool.append(&refs).unwrap();
        originals.extend(batch);
    }
    let appended = originals.len() as u64;
    drop(spool);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "spool.lock")
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let total_len: usize = files.iter().map(|f| f.1.len()).sum();

    let dir = tmp.path().join("trial");
    let mut saw_gaps = 0;
    let mut saw_torn = 0;
    for trial in 0..trials {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut damaged = files.clone();
        let flips = rng.gen_range(1..=4);
        for _ in 0..flips {
            // Pick a byte uniformly over all files.
            let mut at = rng.gen_range(0..total_len);
            for (_, bytes) in damaged.iter_mut() {
                if at < bytes.len() {
                    match rng.gen_range(0..10) {
                        0 => bytes[at] = 0,
                        1 => {
                            let end = (at + rng.gen_range(1..40)).min(bytes.len());
                            bytes[at..end].fill(0);
                        }
                        _ => bytes[at] ^= 1 << rng.gen_range(0..8),
                    }
                    break;
                }
                at -= bytes.len();
            }
        }
        for (name, bytes) in &damaged {
            fs::write(dir.join(name), bytes).unwrap();
        }
        let (mut spool, report) =
            Spool::open(cfg(&dir, 700)).unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        let (recs, skipped) = read_all(&mut spool, 0, rng.gen_range(1..20));
        let mut seen = BTreeSet::new();
        for (s, d) in &recs {
            assert!(seen.insert(*s), "trial {trial}: seq {s} read twice");
            assert_eq!(d, &originals[*s as usize], "trial {trial}: seq {s} differs");
        }
        let report_gaps: BTreeSet<u64> = report.gaps.iter().flat_map(|&(s, e)| s.0..e.0).collect();
        let read_gaps: BTreeSet<u64> = skipped.iter().flat_map(|&(s, e)| s..e).collect();
        assert_eq!(
            report_gaps, read_gaps,
            "trial {trial}: open and read disagree on gaps"
        );
        assert!(seen.is_disjoint(&read_gaps), "trial {trial}");
        let next = spool.next_seq().0;
        let torn: BTreeSet<u64> = (next..appended).collect();
        if !torn.is_empty() {
            assert!(
                report.truncated_tail_bytes > 0,
                "trial {trial}: seqs {torn:?} vanished: {report:?}"
            );
            // Damage to the length or seq field of the last frames looks like a torn write.
            assert!(
                torn.len() <= flips * 2,
                "trial {trial}: {} records torn by {flips} flips",
                torn.len()
            );
            saw_torn += 1;
        }
        let accounted =
            seen.len() + read_gaps.iter().filter(|&&s| s < appended).count() + torn.len();
        assert_eq!(accounted as u64, appended, "trial {trial}: {report:?}");
        if !report.gaps.is_empty() {
            saw_gaps += 1;
            assert!(report.corrupt_records > 0);
        }
        assert_eq!(
            spool.stats().corrupt_records,
            report.corrupt_records,
            "trial {trial}"
        );

        // The spool goes on: new records get new seqs and read back after a reopen.
        let first_new = append_seqs(&mut spool, 3).start;
        assert!(first_new >= next);
        drop(spool);
        let (mut spool, _) = Spool::open(cfg(&dir, 700)).unwrap();
        let r = spool.read(Seq(first_new), 10, 1 << 20).unwrap();
        let got: Vec<u64> = r.records.iter().map(|(s, _)| s.0).collect();
        assert_eq!(
            got,
            vec![first_new, first_new + 1, first_new + 2],
            "trial {trial}"
        );
        assert!(r.records.iter().all(|(s, d)| *d == content(s.0)));
    }
    if trials >= 100 {
        assert!(
            saw_gaps > trials / 4,
            "only {saw_gaps} trials produced gaps"
        );
        eprintln!("{trials} trials: {saw_gaps} with gaps, {saw_torn} with a torn tail");
    }
}

#[test]
fn corruption_found_after_open_is_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (mut spool, _) = Spool::open(cfg(&dir, 8192)).unwrap();
    for _ in 0..10 {
        append_seqs(&mut spool, 10);
    }
    assert!(segment_files(&dir).len() > 1);
    let seg = dir.join(&segment_files(&dir)[0]);
    let offset_of = |seq: u64| 36 + (0..seq).map(|s| 16 + content(s).len()).sum::<usize>();
    // Reading a record of another segment makes the spool read segment 0 afresh.
    let elsewhere = |spool: &mut Spool| {
        spool.read(Seq(99), 1, 1 << 20).unwrap();
    };

    // Damage a record while the spool is open.
    let mut bytes = fs::read(&seg).unwrap();
    bytes[offset_of(20) + 20] ^= 0xff; // inside seq 20's data
    fs::write(&seg, &bytes).unwrap();
    let (recs, skipped) = read_all(&mut spool, 0, 1000);
    assert_eq!(skipped, vec![(20, 21)]);
    assert_eq!(recs.len(), 99);
    assert_eq!(spool.stats().corrupt_records, 1);
    assert_eq!(spool.stats().pending, 99);
    // Read again: reported again, counted once.
    let r = spool.read(Seq(15), 10, 1 << 20).unwrap();
    assert_eq!(r.skipped, vec![(Seq(20), Seq(21))]);
    assert_eq!(r.records.len(), 10);
    assert_eq!(r.records[5].0, Seq(21));
    assert_eq!(spool.stats().corrupt_records, 1);

    // Damage found while skipping towards `from` costs only the damaged record.
    bytes[offset_of(10) + 1] ^= 0x01; // seq 10's length field
    fs::write(&seg, &bytes).unwrap();
    elsewhere(&mut spool);
    let r = spool.read(Seq(15), 3, 1 << 20).unwrap();
    assert_eq!(
        r.records.iter().map(|r| r.0.0).collect::<Vec<_>>(),
        vec![15, 16, 17]
    );
    assert!(r.skipped.is_empty());
    elsewhere(&mut spool);
    let (recs, skipped) = read_all(&mut spool, 5, 1000);
    assert_eq!(skipped, vec![(10, 11), (20, 21)]);
    assert_eq!(recs.len(), 95 - 2);
    assert_eq!(spool.stats().corrupt_records, 2);
}

/// The child side of the kill test: appends until killed, printing each durable
/// range after `append` returned and each release after `release` returned.
#[test]
fn child_process_entry() {
    let Ok(dir) = std::env::var("VIGIE_SPOOL_CHILD_DIR") else {
        return;
    };
    let seed: u64 = std::env::var("VIGIE_SPOOL_CHILD_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = SpoolConfig::new(&dir);
    c.segment_bytes = 16 << 10;
    c.max_bytes = 64 << 20;
    let (mut spool, _) = Spool::open(c).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..1_000_000u64 {
        let r = append_seqs(&mut spool, rng.gen_range(1..60));
        writeln!(out, "durable {} {}", r.start, r.end).unwrap();
        out.flush().unwrap();
        if i % 7 == 6 {
            let end = Seq(spool
                .next_seq()
                .0
                .saturating_sub(rng.gen_range(0..200))
                .max(spool.acked_end().0));
            spool.release(end).unwrap();
            writeln!(out, "released {}", end.0).unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn kill_9_never_loses_a_durable_record() {
    let kills: u32 = std::env::var("VIGIE_SPOOL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(0x9);
    let mut durable: BTreeMap<u64, u64> = BTreeMap::new(); // start -> end
    let mut released = 0u64;
    let mut epoch: Option<Epoch> = None;
    let mut torn_tails = 0;
    for k in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VIGIE_SPOOL_CHILD_DIR", &dir)
            .env("VIGIE_SPOOL_CHILD_SEED", (1000 + k).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = rng.gen_range(1..80);
        let mut seen = 0;
        let mut record = |line: &str| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["durable", s, e] => {
                    durable.insert(s.parse().unwrap(), e.parse().unwrap());
                    true
                }
                ["released", e] => {
                    released = released.max(e.parse().unwrap());
                    false
                }
                _ => false,
            }
        };
        for line in lines.by_ref() {
            if record(&line.unwrap()) {
                seen += 1;
                if seen >= target {
                    break;
                }
            }
        }
        // A random moment: somewhere inside one of the next appends, fsyncs or releases.
        std::thread::sleep(std::time::Duration::from_micros(rng.gen_range(0..3000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever the child printed before it died was durable too.
        for line in lines {
            record(&line.unwrap());
        }
        assert!(seen >= target, "child {k} stopped early");

        let (mut spool, report) = Spool::open(cfg(&dir, 16 << 10)).unwrap();
        assert!(
            report.gaps.is_empty() && report.corrupt_records == 0,
            "kill {k}: {report:?}"
        );
        torn_tails += u32::from(report.truncated_tail_bytes > 0);
        assert_eq!(*epoch.get_or_insert(spool.epoch()), spool.epoch());
        assert!(
            spool.acked_end().0 >= released,
            "kill {k}: a release was lost"
        );
        let last_durable = *durable.values().max().unwrap();
        assert!(
            spool.next_seq().0 >= last_durable,
            "kill {k}: durable records lost"
        );
        let from = spool.acked_end().0;
        let (recs, skipped) = read_all(&mut spool, from, 500);
        assert!(skipped.is_empty());
        let seqs: Vec<u64> = recs.iter().map(|r| r.0).collect();
        assert_eq!(
            seqs,
            (from..spool.next_seq().0).collect::<Vec<_>>(),
            "kill {k}"
        );
        assert!(recs.iter().all(|(s, d)| *d == content(*s)), "kill {k}");
    }
    eprintln!(
        "{kills} kills, {torn_tails} left a torn tail, {} durable appends checked",
        durable.len()
    );
}

#[test]
fn full_writes_nothing_and_release_reclaims_space() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let c = SpoolConfig {
        dir: dir.clone(),
        max_bytes: 4096,
        segment_bytes: 1024,
        sync: true,
    };
    let (mut spool, _) = Spool::open(c.clone()).unwrap();
    let rec = [7u8; 100];
    let full = loop {
        match spool.append(&[&rec, &rec]) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let SpoolError::Full { needed, free } = full else {
        panic!("{full}")
    };
    assert!(needed > free);
    assert!(full.to_string().starts_with("spool full:"), "{full}");
    let disk = |dir: &Path| -> u64 {
        segment_files(dir)
            .iter()
            .map(|n| fs::metadata(dir.join(n)).unwrap().len())
            .sum()
    };
    let stats = spool.stats();
    assert!(stats.bytes <= 4096);
    assert_eq!(stats.bytes, disk(&dir));
    // Nothing was written by a failed append.
    let next = spool.next_seq();
    assert!(matches!(
        spool.append(&[&rec[..]; 30]),
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.next_seq(), next);
    assert_eq!(spool.stats().bytes, disk(&dir));

    spool.release(next).unwrap();
    assert!(spool.stats().bytes <= 1024 + 36, "{:?}", spool.stats());
    // Space is back; the released active segment is recycled when it fills.
    for _ in 0..30 {
        spool.append(&[&rec, &rec]).unwrap();
        spool.release(spool.next_seq()).unwrap();
        assert!(disk(&dir) <= 4096);
    }
    drop(spool);
    let (spool, _) = Spool::open(c).unwrap();
    assert!(spool.stats().bytes <= 4096);
}

#[test]
fn oversized_records_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(cfg(tmp.path(), 4096)).unwrap();
    let big = vec![0u8; vigie_spool::MAX_RECORD_LEN + 1];
    let err = spool.append(&[b"ok", &big]).unwrap_err();
    assert!(
        matches!(err, SpoolError::RecordTooLarge { len, max } if len == big.len() && max == vigie_spool::MAX_RECORD_LEN)
    );
    assert_eq!(spool.next_seq(), Seq(0));
    assert_eq!(spool.append(&[]).unwrap(), 0..0);
    // A record at the cap is fine, in a segment of its own.
    let max = vec![1u8; vigie_spool::MAX_RECORD_LEN];
    assert_eq!(spool.append(&[b"a", &max]).unwrap(), 0..2);
    let r = spool.read(Seq(0), 10, 10).unwrap();
    assert_eq!(
        r.records.len(),
        1,
        "the byte limit stops after the small record"
    );
    let r = spool.read(Seq(1), 10, 10).unwrap();
    assert_eq!(
        r.records.len(),
        1,
        "one record larger than max_bytes is still returned"
    );
    assert_eq!(r.records[0].1, max);
}

#[test]
fn new_epoch_renumbers_pending_records_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (mut spool, _) = Spool::open(cfg(&dir, 2048)).unwrap();
    for _ in 0..50 {
        append_seqs(&mut spool, 10);
    }
    spool.release(Seq(123)).unwrap();
    let old_epoch = spool.epoch();
    let old_files = segment_files(&dir);
    let saved = tmp.path().join("before");
    copy_dir(&dir, &saved);

    let new = spool.new_epoch().unwrap();
    assert_ne!(new, old_epoch);
    assert_eq!(spool.epoch(), new);
    assert_eq!(spool.acked_end(), Seq(0));
    assert_eq!(spool.next_seq(), Seq(500 - 123));
    let check = |spool: &mut Spool| {
        let (recs, skipped) = read_all(spool, 0, 64);
        assert!(skipped.is_empty());
        assert_eq!(recs.len(), 500 - 123);
        for (i, (s, d)) in recs.iter().enumerate() {
            assert_eq!(*s, i as u64);
            assert_eq!(*d, content(123 + i as u64));
        }
    };
    check(&mut spool);
    let files = segment_files(&dir);
    assert!(
        files.iter().all(|n| n.contains(&new.to_string())),
        "{files:?}"
    );
    // New records follow on.
    append_seqs(&mut spool, 1);
    assert_eq!(spool.next_seq(), Seq(500 - 123 + 1));
    drop(spool);

    // Old-epoch segments that survived a crash are deleted on open.
    fs::copy(saved.join(&old_files[3]), dir.join(&old_files[3])).unwrap();
    let (spool, report) = Spool::open(cfg(&dir, 2048)).unwrap();
    assert_eq!(spool.epoch(), new);
    assert_eq!(report.removed_stale, vec![dir.join(&old_files[3])]);
    drop(spool);

    // A crash before the metadata switched: the old epoch is intact and wins,
    // the half-made new one is deleted.
    let crashed = tmp.path().join("crashed");
    copy_dir(&saved, &crashed);
    for n in &files {
        fs::copy(dir.join(n), crashed.join(n)).unwrap();
    }
    let (mut spool, report) = Spool::open(cfg(&crashed, 2048)).unwrap();
    assert_eq!(spool.epoch(), old_epoch);
    assert_eq!(report.removed_stale.len(), files.len());
    assert_eq!(spool.acked_end(), Seq(123));
    let (recs, _) = read_all(&mut spool, 123, 100);
    assert_eq!(recs.len(), 500 - 123);
    assert!(recs.iter().all(|(s, d)| *d == content(*s)));

    // An empty spool changes epoch too.
    spool.release(spool.next_seq()).unwrap();
    let e = spool.new_epoch().unwrap();
    assert_eq!(
        (spool.epoch(), spool.next_seq(), spool.acked_end()),
        (e, Seq(0), Seq(0))
    );
    assert_eq!(append_seqs(&mut spool, 2), 0..2);
}

#[test]
fn damaged_metadata_and_junk_files_are_survived_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (mut spool, _) = Spool::open(cfg(&dir, 1024)).unwrap();
    for _ in 0..20 {
        append_seqs(&mut spool, 10);
    }
    spool.release(Seq(77)).unwrap();
    let epoch = spool.epoch();
    let first_kept = first_seq_of(&segment_files(&dir)[0]);
    drop(spool);

    fs::write(dir.join("spool.meta"), b"garbage").unwrap();
    fs::write(dir.join("notes.txt"), b"hello").unwrap();
    fs::create_dir(dir.join("subdir")).unwrap();
    fs::write(dir.join("spool.meta.tmp"), b"half").unwrap();
    fs::write(
        dir.join(format!("seg-{epoch}-{:020}.log.tmp", 999)),
        b"half",
    )
    .unwrap();
    let (mut spool, report) = Spool::open(cfg(&dir, 1024)).unwrap();
    assert!(
        matches!(&report.meta, MetaStatus::Damaged { reason } if reason.contains("expected 36 bytes")),
        "{report:?}"
    );
    assert!(!report.created);
    assert_eq!(
        report.ignored_files,
        vec![dir.join("notes.txt"), dir.join("subdir")]
    );
    assert!(!dir.join("spool.meta.tmp").exists());
    assert_eq!(spool.epoch(), epoch);
    // Everything still on disk is pending again: duplicates are the collector's to drop.
    assert_eq!(spool.acked_end(), Seq(first_kept));
    assert_eq!(spool.next_seq(), Seq(200));
    let (recs, skipped) = read_all(&mut spool, 0, 100);
    assert!(skipped.is_empty());
    assert_eq!(recs.first().unwrap().0, first_kept);
    assert_eq!(recs.len() as u64, 200 - first_kept);
    drop(spool);
    // The metadata was rewritten.
    let (_, report) = Spool::open(cfg(&dir, 1024)).unwrap();
    assert_eq!(report.meta, MetaStatus::Intact);

    // A damaged segment header: the file name says what it is.
    let seg = dir.join(&segment_files(&dir)[1]);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[3] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let (mut spool, report) = Spool::open(cfg(&dir, 1024)).unwrap();
    assert_eq!(report.damaged_headers, vec![seg.clone()]);
    assert!(report.gaps.is_empty());
    let (recs, _) = read_all(&mut spool, 0, 100);
    assert_eq!(recs.len() as u64, 200 - first_kept);
}

#[test]
fn unusable_segment_files_are_left_alone_and_their_seqs_never_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (mut spool, _) = Spool::open(cfg(&dir, 4096)).unwrap();
    append_seqs(&mut spool, 10);
    let epoch = spool.epoch();
    drop(spool);
    // Named like a segment of this epoch starting at 100, but its header says 5.
    let first = fs::read(dir.join(&segment_files(&dir)[0])).unwrap();
    let mut odd = first[..36].to_vec();
    odd[24..32].copy_from_slice(&5u64.to_le_bytes());
    let crc = crc32c::crc32c(&odd[..32]);
    odd[32..36].copy_from_slice(&crc.to_le_bytes());
    odd.extend_from_slice(&[0u8; 160]);
    let odd_name = format!("seg-{epoch}-{:020}.log", 100);
    fs::write(dir.join(&odd_name), &odd).unwrap();
    let (mut spool, report) = Spool::open(cfg(&dir, 4096)).unwrap();
    assert_eq!(report.ignored_files, vec![dir.join(&odd_name)]);
    // The file might hold seqs 100..110: they count as lost, never reused.
    assert_eq!(spool.next_seq(), Seq(110));
    assert_eq!(report.gaps, vec![(Seq(10), Seq(110))]);
    let (recs, skipped) = read_all(&mut spool, 0, 100);
    assert_eq!((recs.len(), skipped), (10, vec![(10, 110)]));
    append_seqs(&mut spool, 3);
    assert_eq!(fs::read(dir.join(&odd_name)).unwrap(), odd);
    drop(spool);
    let (mut spool, report) = Spool::open(cfg(&dir, 4096)).unwrap();
    assert_eq!(spool.next_seq(), Seq(113));
    assert_eq!(report.gaps, vec![(Seq(10), Seq(110))]);
    let (recs, _) = read_all(&mut spool, 0, 100);
    assert_eq!(recs.len(), 13);
    assert!(recs.iter().all(|(s, d)| *d == content(*s)));
}

#[test]
fn fsync_is_on_by_default() {
    let c = SpoolConfig::new("/nonexistent");
    assert!(c.sync);
    assert!(c.segment_bytes < c.max_bytes);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, _) = Spool::open(cfg(tmp.path(), 4096)).unwrap();
    let err = Spool::open(cfg(tmp.path(), 4096)).unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    let bad = SpoolConfig {
        segment_bytes: 10,
        ..cfg(tmp.path(), 4096)
    };
    assert!(matches!(
        Spool::open(bad),
        Err(SpoolError::InvalidConfig { .. })
    ));
}

#[test]
fn missing_segment_is_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (mut spool, _) = Spool::open(cfg(&dir, 1024)).unwrap();
    for _ in 0..30 {
        append_seqs(&mut spool, 5);
    }
    drop(spool);
    let files = segment_files(&dir);
    let (a, b) = (first_seq_of(&files[2]), first_seq_of(&files[3]));
    fs::remove_file(dir.join(&files[2])).unwrap();
    let (mut spool, report) = Spool::open(cfg(&dir, 1024)).unwrap();
    assert_eq!(report.gaps, vec![(Seq(a), Seq(b))]);
    assert_eq!(report.corrupt_records, b - a);
    let (recs, skipped) = read_all(&mut spool, 0, 7);
    assert_eq!(skipped, vec![(a, b)]);
    assert_eq!(recs.len() as u64, 150 - (b - a));
    assert_eq!(spool.stats().pending, 150 - (b - a));
}

const GOLDEN_EPOCH: u64 = 0x0123_4567_89ab_cdef;

/// The records in `tests/golden/v1` (the same list as in `format.rs`'s test).
fn golden_records() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        b"hello".to_vec(),
        b"vigie spool format 1".to_vec(),
        (0..=255u8).collect(),
        vec![0xff; 3],
    ]
}

/// Every build must read the committed version 1 spool.
#[test]
fn golden_v1_spool_still_reads() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    copy_dir(&golden, &dir);
    let (mut spool, report) = Spool::open(cfg(&dir, 4096)).unwrap();
    assert_eq!(report.meta, MetaStatus::Intact);
    assert!(
        report.gaps.is_empty()
            && report.truncated_tail_bytes == 0
            && report.ignored_files.is_empty()
    );
    assert_eq!(spool.epoch(), Epoch(GOLDEN_EPOCH));
    assert_eq!(spool.acked_end(), Seq(2));
    assert_eq!(spool.next_seq(), Seq(5));
    let r = spool.read(Seq(0), 100, 1 << 20).unwrap();
    let want: Vec<(Seq, Vec<u8>)> = golden_records()
        .into_iter()
        .enumerate()
        .map(|(i, d)| (Seq(i as u64), d))
        .collect();
    assert_eq!(r.records, want);
    // And it keeps working as a spool.
    assert_eq!(spool.append(&[b"six"]).unwrap(), 5..6);
}
