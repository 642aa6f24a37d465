use super::*;
use crate::balance::Weights;
use crate::sinks::xds::build::tests::{options, registry, snapshot};
use crate::sinks::xds::build::{AllEndpoints, Builder};

#[test]
fn delta_sends_only_what_changed_and_what_went() {
    let mut sub = DeltaSubscription::default();
    sub.update(true, &[], &[], &HashMap::new());
    let one = snapshot(&["a/127.0.0.1:1"]);
    let first = sub.diff(&one, CLUSTER_TYPE);
    assert_eq!(first.resources.len(), 2);
    assert!(first.removed.is_empty());
    sub.sent(&first, &one.version);
    assert!(sub.diff(&one, CLUSTER_TYPE).is_empty());
    let two = snapshot(&["b/127.0.0.1:2"]);
    let next = sub.diff(&two, CLUSTER_TYPE);
    let names: Vec<&str> = next.resources.iter().map(|r| r.name.as_str()).collect();
    // The all cluster is EDS: its hosts changed, the cluster did not.
    assert_eq!(names, ["colyseus-process-b"]);
    assert_eq!(next.removed, ["colyseus-process-a"]);
}

#[test]
fn a_reconnecting_envoy_gets_only_what_it_lacks() {
    let snap = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
    let mut initial: HashMap<String, String> = snap
        .clusters
        .values()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    initial.insert("colyseus-process-a".into(), "stale".into());
    initial.insert("colyseus-process-gone".into(), "1".into());
    let mut sub = DeltaSubscription::default();
    sub.update(true, &["*".into()], &[], &initial);
    let d = sub.diff(&snap, CLUSTER_TYPE);
    let names: Vec<&str> = d.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["colyseus-process-a"]);
    assert_eq!(d.removed, ["colyseus-process-gone"]);
}

#[test]
fn explicit_names_and_unsubscribe() {
    let snap = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
    let mut sub = DeltaSubscription::default();
    sub.update(true, &["colyseus-process-b".into()], &[], &HashMap::new());
    let d = sub.diff(&snap, CLUSTER_TYPE);
    assert_eq!(d.resources.len(), 1);
    sub.sent(&d, &snap.version);
    sub.update(false, &[], &["colyseus-process-b".into()], &HashMap::new());
    assert!(sub.diff(&snap, CLUSTER_TYPE).is_empty());
}

#[test]
fn eds_hosts_go_to_whoever_names_them_and_again_on_a_resubscribe() {
    let snap = snapshot(&["a/127.0.0.1:1"]);
    let mut sub = DeltaSubscription::default();
    // Envoy's first EDS request names the cluster it is warming.
    sub.update(true, &["colyseus-all".into()], &[], &HashMap::new());
    let d = sub.diff(&snap, ENDPOINT_TYPE);
    assert_eq!(d.resources.len(), 1);
    sub.sent(&d, &snap.version);
    assert!(sub.diff(&snap, ENDPOINT_TYPE).is_empty());
    // The cluster re-created: Envoy names it again and waits for its hosts.
    sub.update(false, &["colyseus-all".into()], &[], &HashMap::new());
    assert_eq!(sub.diff(&snap, ENDPOINT_TYPE).resources.len(), 1);
    // A reconnect that holds them gets nothing.
    let held: HashMap<String, String> = snap
        .endpoints
        .values()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let mut again = DeltaSubscription::default();
    again.update(true, &["colyseus-all".into()], &[], &held);
    assert!(again.diff(&snap, ENDPOINT_TYPE).is_empty());
}

#[test]
fn a_stream_that_sent_the_predecessor_compares_only_what_changed() {
    let steps: [&[&str]; 5] = [
        &["a/127.0.0.1:1", "b/127.0.0.1:2"],
        &["a/127.0.0.1:1", "b/127.0.0.1:2", "c/127.0.0.1:3"],
        &["a/127.0.0.1:9", "c/127.0.0.1:3"],
        &["a/127.0.0.1:9", "c/127.0.0.1:3"],
        &[],
    ];
    let mut builder = Builder::new(options(), AllEndpoints::Eds);
    let mut subs = [DeltaSubscription::default(), DeltaSubscription::default()];
    subs[0].update(true, &[], &[], &HashMap::new());
    subs[1].update(true, &["colyseus-all".into()], &[], &HashMap::new());
    let mut previous: Option<String> = None;
    for members in steps {
        let (snap, _) = builder.build(&registry(members), &Weights::new());
        let changed = snap.changed.as_ref().expect("made from its predecessor");
        if let Some(p) = &previous {
            assert_eq!(&changed.from, p);
        }
        for (sub, t) in subs.iter_mut().zip([CLUSTER_TYPE, ENDPOINT_TYPE]) {
            let mut whole = sub.clone();
            whole.synced = None;
            let (d, full) = (sub.diff(&snap, t), whole.diff(&snap, t));
            assert_eq!(d, full, "{members:?} {t}");
            sub.sent(&d, &snap.version);
            // Sent: nothing more, compared whole or not.
            assert!(sub.diff(&snap, t).is_empty());
            let mut whole = sub.clone();
            whole.synced = None;
            assert!(whole.diff(&snap, t).is_empty(), "{members:?} {t}");
        }
        previous = Some(snap.version.clone());
    }
    // A subscription change compares everything again.
    subs[1].update(false, &["colyseus-all".into()], &[], &HashMap::new());
    assert!(subs[1].synced.is_none());
}

/// The (resources, removals) names of each batch.
fn batch_names(batches: &[DeltaChanges]) -> Vec<(Vec<&str>, Vec<&str>)> {
    batches
        .iter()
        .map(|b| {
            (
                b.resources.iter().map(|r| r.name.as_str()).collect(),
                b.removed.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

/// A response's changes as the stream records them for its ACK or NACK.
fn pending_of(changes: &DeltaChanges) -> Vec<(String, Option<String>)> {
    changes
        .resources
        .iter()
        .map(|r| (r.name.clone(), Some(r.version.clone())))
        .chain(changes.removed.iter().map(|n| (n.clone(), None)))
        .collect()
}

#[test]
fn a_response_refused_whole_is_resent_in_halves_until_only_the_refused_one_is_left() {
    let mut builder = Builder::new(options(), AllEndpoints::Eds);
    let mut sub = DeltaSubscription::default();
    sub.update(true, &[], &[], &HashMap::new());
    let (one, _) = builder.build(&registry(&["a/127.0.0.1:1"]), &Weights::new());
    let first = sub.diff(&one, CLUSTER_TYPE);
    sub.sent(&first, &one.version);
    // b and c arrive together (a leaves) and Envoy refuses the response (c is invalid).
    let (two, _) = builder.build(
        &registry(&["b/127.0.0.1:2", "c/127.0.0.1:3"]),
        &Weights::new(),
    );
    let all = sub.diff(&two, CLUSTER_TYPE);
    sub.sent(&all, &two.version);
    assert_eq!(
        batch_names(&sub.batches(sub.diff(&two, CLUSTER_TYPE))).len(),
        1
    );
    sub.nacked(&pending_of(&all));
    // Again, in two halves: the removal of a too (Envoy may still hold it).
    let again = sub.diff(&two, CLUSTER_TYPE);
    sub.sent(&again, &two.version);
    let halves = sub.batches(again);
    assert_eq!(
        batch_names(&halves),
        [
            (vec!["colyseus-process-b", "colyseus-process-c"], vec![]),
            (vec![], vec!["colyseus-process-a"]),
        ]
    );
    // The half with c is refused: halved again.
    sub.nacked(&pending_of(&halves[0]));
    let again = sub.diff(&two, CLUSTER_TYPE);
    sub.sent(&again, &two.version);
    let alone = sub.batches(again);
    assert_eq!(
        batch_names(&alone),
        [
            (vec!["colyseus-process-b"], vec![]),
            (vec!["colyseus-process-c"], vec![]),
        ]
    );
    // c, refused alone, stays sent: nothing is resent.
    sub.nacked(&pending_of(&alone[1]));
    assert!(sub.diff(&two, CLUSTER_TYPE).is_empty());
    assert_eq!(sub.batches(DeltaChanges::default()).len(), 1);
}
