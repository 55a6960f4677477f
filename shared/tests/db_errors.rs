//! What the database's refusals become, on a real PostgreSQL: text it cannot
//! store is the client's 400 over HTTP, not a 500 (found by schemathesis).

use sqlx::Connection;

use shared::http::ApiError;

#[tokio::test]
async fn text_the_database_cannot_store_is_the_clients_error() {
    let url = shared::testkit::admin_database_url();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let error = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&mut db)
        .await
        .unwrap_err();
    let answer = ApiError::from(error);
    assert_eq!(answer.status(), axum::http::StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "invalid_text");
}
