//! What the database's errors mean, on a real PostgreSQL
//! (`shared::db::Failure`): refused data is permanent (a worker
//! dead-letters its event), a database out of reach is for a retry, a bug
//! in a statement is neither; and over HTTP, text the database cannot store
//! is the client's 400, not a 500 (found by schemathesis).

use sqlx::Connection;

use shared::db::Failure;
use shared::http::ApiError;

async fn connection() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&shared::testkit::admin_database_url())
        .await
        .unwrap()
}

#[tokio::test]
async fn text_the_database_cannot_store_is_the_clients_error() {
    let mut db = connection().await;
    let error = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&mut db)
        .await
        .unwrap_err();
    assert!(Failure::of(&error).is_unstorable_text(), "{error}");
    let answer = ApiError::from(error);
    assert_eq!(answer.status(), axum::http::StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "invalid_text");
}

#[tokio::test]
async fn refused_data_unreachable_databases_and_bugs_are_told_apart() {
    let mut db = connection().await;
    let refused = |sql: &'static str| async {
        let mut db = connection().await;
        let error = sqlx::raw_sql(sql).execute(&mut db).await.unwrap_err();
        Failure::of(&error)
    };
    for (sql, code) in [
        ("SELECT 1 / 0", "22012"),
        ("SELECT 2147483647::int4 + 1", "22003"),
        (
            "CREATE TEMP TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (1), (1)",
            "23505",
        ),
    ] {
        assert!(
            matches!(refused(sql).await, Failure::Refused { code: c, .. } if c == code),
            "{sql}"
        );
    }
    let bug = sqlx::query("SELECT no_such_column FROM pg_class")
        .execute(&mut db)
        .await
        .unwrap_err();
    assert_eq!(Failure::of(&bug), Failure::Other);
    let answer = ApiError::from(bug);
    assert_eq!(
        answer.status(),
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    );

    // A port nothing listens on: out of reach, 503.
    let closed = format!(
        "postgres://kappa:kappa@127.0.0.1:{}/kappa",
        shared::testkit::free_port()
    );
    let error = sqlx::PgConnection::connect(&closed).await.unwrap_err();
    assert_eq!(Failure::of(&error), Failure::Unavailable);
    assert_eq!(
        ApiError::from(error).status(),
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    );
}
