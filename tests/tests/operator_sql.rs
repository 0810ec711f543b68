//! What the operator does to PostgreSQL, run for real: the same functions the controller calls,
//! against a local 3-node cluster standing in for the pods of a PaxosGroup.

use std::time::Duration;

use pg_paxos_operator::sql::ops::{self, Outcome};
use pg_paxos_operator::sql::{Credentials, Member};
use pg_paxos_tests::{bounded, Cluster};

const TIMEOUT: Duration = Duration::from_secs(10);

fn members(cluster: &Cluster) -> Vec<Member> {
    cluster
        .nodes()
        .map(|n| Member {
            name: format!("pod-{n}"),
            host: "127.0.0.1".into(),
            port: cluster.port(n),
            database: "postgres".into(),
            user: "postgres".into(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forming_a_group_replicating_and_leaving_are_idempotent() {
    bounded(async {
        let cluster = Cluster::new("operator_sql", 3);
        let members = members(&cluster);
        let creds = Credentials::default();
        let group = "shop's \"orders\"; --";
        let table = "Sales.Order \"Lines\"";
        let mut clients = Vec::new();
        for m in &members {
            clients.push(m.connect(&creds, TIMEOUT).await.unwrap());
        }
        // Every step twice, as a reconcile that failed half-way and runs again.
        for pass in 0..2 {
            for (c, m) in clients.iter().zip(&members) {
                ops::ensure_extension(c, m).await.unwrap();
                c.batch_execute("CREATE SCHEMA IF NOT EXISTS \"Sales\"")
                    .await
                    .unwrap();
            }
            let created = ops::ensure_group(&clients[0], &members[0], group)
                .await
                .unwrap();
            assert_eq!(created == Outcome::Done, pass == 0);
            for i in 1..3 {
                let joined = ops::ensure_joined(&clients[i], &members[i], group, &members[0])
                    .await
                    .unwrap();
                assert_eq!(
                    joined == Outcome::Done,
                    pass == 0,
                    "member {i}, pass {pass}"
                );
            }
            // The table exists nowhere yet: it is created from the column definitions.
            for (c, m) in clients.iter().zip(&members) {
                ops::ensure_table(
                    c,
                    m,
                    table,
                    Some("id bigint PRIMARY KEY, note text DEFAULT 'x;y'"),
                )
                .await
                .unwrap();
            }
            let replicated = ops::ensure_replicated(&clients[0], &members[0], group, table)
                .await
                .unwrap();
            assert_eq!(replicated == Outcome::Done, pass == 0);
        }
        clients[1]
            .execute(
                "INSERT INTO \"Sales\".\"Order \"\"Lines\"\"\" (id) VALUES (1)",
                &[],
            )
            .await
            .unwrap();
        let seen = ops::observe(&clients[2], &members[2], group).await.unwrap();
        assert_eq!(seen.members.len(), 3, "never a double join: {seen:?}");
        assert!(seen.members.iter().all(|m| m.reachable));
        assert!(seen.max_round > 0);
        assert_eq!(seen.members.iter().filter(|m| m.is_self).count(), 1);
        let count: i64 = clients[2]
            .query_one(
                "SELECT count(*) FROM \"Sales\".\"Order \"\"Lines\"\"\"",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 1);

        // Scale down: the last member leaves, twice.
        assert_eq!(
            ops::ensure_left(&clients[2], &members[2], group)
                .await
                .unwrap(),
            Outcome::Done
        );
        assert_eq!(
            ops::ensure_left(&clients[2], &members[2], group)
                .await
                .unwrap(),
            Outcome::AlreadyDone
        );
        let seen = ops::observe(&clients[0], &members[0], group).await.unwrap();
        assert_eq!(seen.members.len(), 2, "{seen:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_and_unreachable_members_give_clear_errors() {
    bounded(async {
        let cluster = Cluster::new("operator_errors", 1);
        let member = &members(&cluster)[0];
        let c = member
            .connect(&Credentials::default(), TIMEOUT)
            .await
            .unwrap();
        let missing = ops::ensure_table(&c, member, "public.nowhere", None)
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("gives no columns"),
            "{missing}"
        );
        let injected =
            ops::ensure_table(&c, member, "t", Some("id int); DROP TABLE paxos.log; --"))
                .await
                .unwrap_err();
        assert_eq!(injected.reason(), "InvalidSpec", "{injected}");
        let exists: bool = c
            .query_one("SELECT to_regclass('paxos.log') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(exists);
        let not_there = ops::ensure_group(&c, member, "g").await;
        assert!(not_there.is_ok());
        let sql_error = ops::ensure_replicated(&c, member, "g", "public.nowhere")
            .await
            .unwrap_err();
        assert_eq!(sql_error.reason(), "SqlFailed", "{sql_error}");
        assert!(sql_error.to_string().contains("pod-1"), "{sql_error}");

        let gone = Member {
            port: 1,
            ..member.clone()
        };
        let creds = Credentials {
            password: Some("s3cret-value".into()),
        };
        let err = gone
            .connect(&creds, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "MemberUnreachable");
        assert!(!err.to_string().contains("s3cret-value"), "{err}");
    })
    .await;
}
