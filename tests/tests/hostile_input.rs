//! A corpus of hostile names and connection strings through every SQL function: each call
//! succeeds or fails with a clear error (never an internal error or a crashed backend), nothing
//! outside the named object changes, and no password shows up in errors, status or server logs.

use pg_paxos_tests::{bounded, Cluster};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

const SECRET: &str = "hunter2-Sekr3t";

fn names() -> Vec<String> {
    vec![
        String::new(),
        "'".into(),
        "\"".into(),
        "a'; DROP TABLE paxos.log; --".into(),
        "x\"; DROP SCHEMA paxos CASCADE; --".into(),
        "/* c */ g".into(),
        "grüße 🐘".into(),
        "$1".into(),
        "%s%n%x".into(),
        "\\".into(),
        "public.t".into(),
        "pg_catalog".into(),
        "NULL".into(),
        "a".repeat(63),
        "a".repeat(64),
        "é".repeat(40),
    ]
}

fn connection_strings(dead_port: u16) -> Vec<String> {
    vec![
        String::new(),
        "host='".into(),
        "'; DROP TABLE paxos.log; --".into(),
        "host=127.0.0.1 port=99999".into(),
        format!("host=127.0.0.1 port={dead_port} password={SECRET}"),
        format!("host=127.0.0.1 port={dead_port} dbname='x y' password='{SECRET} 2'"),
        "host=127.0.0.1 port=1 options='-c search_path=public'".into(),
        "host=/nonexistent port=1".into(),
        "hostaddr=999.1.1.1".into(),
    ]
}

/// Runs `sql`; a failure must be a clean PostgreSQL error. Returns the error text, if any.
async fn call(c: &Client, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Option<String> {
    match c.query(sql, args).await {
        Ok(_) => None,
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql} {args:?}: not a database error (crash?): {e}"));
            let code = db.code().code();
            assert!(
                !code.starts_with("XX") && !code.starts_with("58"),
                "{sql} {args:?}: internal error {code}: {}",
                db.message()
            );
            assert!(!db.message().is_empty());
            Some(format!(
                "{} {:?} {:?}",
                db.message(),
                db.detail(),
                db.hint()
            ))
        }
    }
}

/// Entries of group `safe` other than table registrations.
async fn safe_entries(c: &Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM paxos.log WHERE group_id = 'safe' AND value_kind <> 'replicate_table'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_connection_strings_through_every_function() {
    bounded(async {
        let cluster = Cluster::new("hostile_corpus", 2);
        let c = cluster.client(1).await;
        let me = cluster.conninfo(1);
        c.batch_execute("CREATE TABLE t (k int PRIMARY KEY)")
            .await
            .unwrap();
        c.execute("SELECT paxos_create_group('safe', $1)", &[&me])
            .await
            .unwrap();
        c.execute("SELECT paxos_append('before', 'safe', 'v')", &[])
            .await
            .unwrap();
        let log_before = safe_entries(&c).await;

        let mut errors = Vec::new();
        // Names where a group name goes (none of these groups exist).
        for name in names() {
            let ci = me.clone();
            let round = 1i64;
            let calls: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> = vec![
                ("SELECT paxos_join_group($1, $2, $2)", vec![&name, &ci]),
                ("SELECT paxos_leave_group($1)", vec![&name]),
                ("SELECT paxos_add_host($1, $2)", vec![&name, &ci]),
                ("SELECT paxos_remove_host($1, $2)", vec![&name, &ci]),
                ("SELECT paxos_append('p', $1, 'v')", vec![&name]),
                ("SELECT * FROM paxos('p', $1, $2)", vec![&name, &round]),
                ("SELECT paxos_apply_log('p', $1, $2)", vec![&name, &round]),
                ("SELECT paxos_max_group_round($1)", vec![&name]),
                ("SELECT * FROM paxos_status($1)", vec![&name]),
                ("SELECT paxos_replicate_table($1, 't')", vec![&name]),
                (
                    "SELECT paxos_replicate_table('safe', $1::text::regclass)",
                    vec![&name],
                ),
            ];
            for (sql, args) in calls {
                errors.extend(call(&c, sql, &args).await);
            }
            // A valid but hostile name creates a group of that name and nothing else.
            if let Some(e) = call(&c, "SELECT paxos_create_group($1, $2)", &[&name, &ci]).await {
                errors.push(e);
            } else {
                let created: i64 = c
                    .query_one(
                        "SELECT count(*) FROM paxos.groups WHERE group_id = $1",
                        &[&name],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(created, 1, "{name:?}");
            }
        }
        // Connection strings where a member's goes, on a group of its own.
        c.execute("SELECT paxos_create_group('victim', $1)", &[&me])
            .await
            .unwrap();
        let dead_port = cluster.port(2) + 100;
        for ci in connection_strings(dead_port) {
            for sql in [
                "SELECT paxos_create_group('fresh', $1)",
                "SELECT paxos_join_group('other', $1, $1)",
                "SELECT paxos_remove_host('victim', $1)",
            ] {
                errors.extend(call(&c, sql, &[&ci]).await);
                let _ = c.execute("SELECT paxos_leave_group('fresh')", &[]).await;
            }
        }
        // A member added with a password is shown without it.
        c.execute(
            "SELECT paxos_add_host('victim', $1)",
            &[&format!(
                "host=127.0.0.1 port={dead_port} password={SECRET}"
            )],
        )
        .await
        .unwrap();
        let status: Vec<String> = c
            .query(
                "SELECT member || coalesce(error, '') FROM paxos_status('victim')",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        // With two members, one unreachable, the victim group has no majority: a clear error.
        errors.extend(call(&c, "SELECT paxos_append('p', 'victim', 'v')", &[]).await);

        // Nothing outside the named objects changed; the safe group works.
        let log_after = safe_entries(&c).await;
        assert_eq!(log_after, log_before, "the safe group's log changed");
        // The one valid table name among them ('public.t') was replicated, and only that.
        let replicated: Vec<String> = c
            .query(
                "SELECT table_name FROM paxos.replicated_tables WHERE group_id = 'safe'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(replicated, ["public.t"]);
        c.execute("SELECT paxos_append('after', 'safe', 'v')", &[])
            .await
            .unwrap();
        for table in [
            "paxos.log",
            "paxos.groups",
            "paxos.acceptor_slots",
            "public.t",
        ] {
            c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap_or_else(|e| panic!("{table} is gone: {e}"));
        }
        assert!(errors.len() > 100, "only {} calls failed", errors.len());
        for text in errors.iter().chain(&status) {
            assert!(!text.contains(SECRET), "a password in {text:?}");
        }
        let log = cluster.server_log(1);
        assert!(!log.contains(SECRET), "a password in the server log");
    })
    .await;
}
