//! The table on the embedded mock cluster: import, follow, delete, and records that
//! cannot be used are skipped.

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio_util::sync::CancellationToken;

use super::signature;
use crate::kafka::{Cluster, KafkaConfig};
use crate::signatures::{delete, import, key, read_table, SignatureTable, StoreError};

/// Polls the table's version until it reaches `at_least`, failing after 30 s.
async fn version_reaches(table: &SignatureTable, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while table.version() < at_least {
        assert!(Instant::now() < deadline, "table stuck at version {} (want {at_least})", table.version());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_table_loads_follows_and_skips_what_it_cannot_use_on_the_mock_cluster() {
    let cluster = Cluster::open(&KafkaConfig::default()).unwrap();
    assert!(cluster.is_embedded());
    let (a, b) = (signature("a"), signature("b"));
    assert_eq!(import(&cluster, &[a.clone(), b.clone()]).await.unwrap(), 2);

    let shutdown = CancellationToken::new();
    let table = SignatureTable::follow(&cluster, shutdown.clone()).await.unwrap();
    let loaded = table.snapshot();
    assert_eq!(loaded.keys().collect::<Vec<_>>(), vec!["web/*/a", "web/*/b"], "loaded in full before returning");
    assert_eq!(loaded["web/*/a"], a);
    let v0 = table.version();
    assert_eq!(v0, 2);

    // Garbage, a key that is not the signature's, and an invalid signature: skipped.
    let producer: BaseProducer = cluster.producer_config().create().unwrap();
    let topic = table.topic().to_owned();
    let codec = crate::codec::Codec::<crate::codec::FailureSignature>::new();
    let mut invalid = signature("c");
    invalid.threshold = 2.0;
    let records: Vec<(String, Vec<u8>)> = vec![
        ("web/*/x".into(), b"not avro".to_vec()),
        ("web/*/wrong".into(), codec.encode(&signature("d")).unwrap()),
        (key(&invalid), codec.encode(&invalid).unwrap()),
    ];
    for (k, p) in &records {
        producer.send(BaseRecord::to(&topic).key(k.as_str()).payload(p.as_slice())).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // A change after them arrives; they changed nothing.
    let mut a2 = a.clone();
    a2.threshold = 0.9;
    import(&cluster, &[a2.clone()]).await.unwrap();
    version_reaches(&table, v0 + 1).await;
    let now = table.current();
    assert_eq!(now.version, v0 + 1);
    assert_eq!(now.entries.len(), 2);
    assert_eq!(now.entries["web/*/a"].threshold, 0.9);

    // Importing the same again is no change; a delete is.
    import(&cluster, &[a2]).await.unwrap();
    delete(&cluster, "web/*/b").await.unwrap();
    version_reaches(&table, v0 + 2).await;
    assert_eq!(table.snapshot().keys().collect::<Vec<_>>(), vec!["web/*/a"]);
    assert_eq!(table.version(), v0 + 2, "re-importing an identical signature changed the version");
    assert_eq!(read_table(&cluster).await.unwrap().len(), 1);

    let e = delete(&cluster, "web/*/b").await.unwrap_err();
    assert!(matches!(e, StoreError::NoSuchKey { .. }), "{e}");
    shutdown.cancel();
    drop(table);
}
