//! Publishing and creating topics when storage gets in the way (a delete
//! racing publishes, a partition that cannot be created), on the file store.

use std::sync::Arc;

use herald::v1::Event;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerConfig, BrokerError, TopicSettingsPatch};
use crate::storage::file::FileStorage;

fn event(i: usize) -> Event {
    Event {
        source: "/tests".into(),
        r#type: "test".into(),
        data: vec![b'x'; 64].into(),
        key: format!("k{i}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_racing_a_topic_delete_are_told_the_topic_was_deleted_not_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let storage = Arc::new(FileStorage::open(dir.path().join(round.to_string())).unwrap());
        let config = BrokerConfig {
            auto_create_topics: false,
            ..Default::default()
        };
        let broker = Broker::open(storage, config, CancellationToken::new()).unwrap();
        let patch = TopicSettingsPatch {
            partitions: Some(4),
            ..Default::default()
        };
        broker.create_topic("doomed", &patch).unwrap();
        let publishers: Vec<_> = (0..8)
            .map(|p| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let mut stored = 0;
                    loop {
                        let events = (0..16).map(|i| event(p * 16 + i)).collect();
                        match broker.publish("doomed", events).await {
                            Ok(_) => stored += 1,
                            Err(error) => return (stored, error),
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        broker.delete_topic("doomed").await.unwrap();
        for publisher in publishers {
            let (stored, error) = publisher.await.unwrap();
            assert!(
                matches!(
                    error,
                    BrokerError::TopicDeleted { .. } | BrokerError::TopicNotFound { .. }
                ),
                "round {round}: after {stored} publishes: {error:?}"
            );
        }
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn a_topic_whose_creation_fails_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileStorage::open(dir.path()).unwrap());
    let broker = Broker::open(storage, BrokerConfig::default(), CancellationToken::new()).unwrap();
    // A file where partition 2's directory must go: partitions 0 and 1
    // open, then partition 2 fails.
    let topic_dir = dir.path().join("topics").join("half");
    std::fs::create_dir_all(&topic_dir).unwrap();
    std::fs::write(topic_dir.join("2"), b"in the way").unwrap();
    let patch = TopicSettingsPatch {
        partitions: Some(4),
        ..Default::default()
    };
    let error = broker.create_topic("half", &patch).unwrap_err();
    assert!(
        matches!(error, BrokerError::Storage { partition: 2, .. }),
        "{error:?}"
    );
    assert!(!topic_dir.exists(), "the failed create left {topic_dir:?}");
    // Once the obstacle is gone, the same create succeeds.
    broker.create_topic("half", &patch).unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_make_one_topic_and_auto_create_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let storage = Arc::new(FileStorage::open(dir.path().join(round.to_string())).unwrap());
        let broker =
            Broker::open(storage, BrokerConfig::default(), CancellationToken::new()).unwrap();
        let patch = TopicSettingsPatch {
            partitions: Some(3),
            ..Default::default()
        };
        let creates: Vec<_> = (0..6)
            .map(|_| {
                let (broker, patch) = (broker.clone(), patch.clone());
                tokio::task::spawn_blocking(move || broker.create_topic("contested", &patch))
            })
            .collect();
        // Publishing auto-creates with the defaults (1 partition) unless it
        // waits for the create in progress and lands in its topic.
        let published = broker.publish("contested", vec![event(0)]).await;
        let mut created = 0;
        for create in creates {
            match create.await.unwrap() {
                Ok(info) => {
                    created += 1;
                    assert_eq!(info.settings.partitions, 3);
                }
                Err(BrokerError::TopicAlreadyExists { topic }) => assert_eq!(topic, "contested"),
                Err(other) => panic!("round {round}: unexpected {other}"),
            }
        }
        let partitions = broker.get_topic("contested").unwrap().settings.partitions;
        match published {
            // The publish won the race: every create was refused.
            Ok(_) if partitions == 1 => assert_eq!(created, 0, "round {round}"),
            Ok(_) => assert_eq!(created, 1, "round {round}"),
            Err(error) => panic!("round {round}: publish failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_of_different_topics_run_side_by_side_and_all_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Arc::new(FileStorage::open(dir.path()).unwrap());
        let broker =
            Broker::open(storage, BrokerConfig::default(), CancellationToken::new()).unwrap();
        let creates: Vec<_> = (0..64)
            .map(|i| {
                let broker = broker.clone();
                tokio::task::spawn_blocking(move || {
                    broker.create_topic(&format!("t{i}"), &TopicSettingsPatch::default())
                })
            })
            .collect();
        for create in creates {
            create.await.unwrap().unwrap();
        }
        assert_eq!(broker.list_topics().len(), 64);
        broker.shutdown().await;
    }
    let storage = Arc::new(FileStorage::open(dir.path()).unwrap());
    let broker = Broker::open(storage, BrokerConfig::default(), CancellationToken::new()).unwrap();
    assert_eq!(broker.list_topics().len(), 64);
}
