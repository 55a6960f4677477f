//! The service against an independent reference of its model
//! (`common/reference.rs`, written from the documentation, in plain linear
//! arithmetic): a few thousand interactions over five weeks through the
//! real broker and database, then every product's similar list, a sample of
//! users' recommendations and the daily counts, compared over HTTP.
//! The crash tests compare with a clean run of the same code, which a bug
//! in the model would agree with; this one would not.

mod common;

use std::time::Duration;

use common::compare::{self, Api};
use shared::testkit::TestEnv;

const EVENTS: usize = 5_000;

#[tokio::test(flavor = "multi_thread")]
async fn the_service_answers_like_an_independent_reference() {
    let env = TestEnv::new("rec_reference").await;
    let topic = env.settings.kafka.events_topic.clone();
    common::produce(&env.settings.kafka, &common::synthetic_weeks(EVENTS, 5)).await;
    let reference = compare::from_topic(&env, EVENTS).await;
    assert_eq!(reference.applied, EVENTS, "every record is an interaction");
    // The neighbour bound is part of what is compared, so it must bite.
    assert!(reference.prunes > 0, "no neighbour list was ever pruned");

    let url = env.settings.database.url.expose().to_owned();
    let group = env.unique("rec-reference");
    let service = common::InProcess::start(&env, &url, &group).await;
    let pool = env.pool().await;
    common::wait_applied(
        &pool,
        &group,
        &topic,
        EVENTS as i64,
        Duration::from_secs(120),
    )
    .await;
    let api = Api::new(service.addr, env.settings.auth.admin_token.expose());

    // Every product, as long a list as the API gives (lists add up across
    // partitions, so some are longer than the 20 kept per partition).
    let products = compare::assert_products(&api, &reference, 100).await;
    // Every third user and one the stream never saw (popular products
    // only), at two limits: at 100 some histories are thin and fill up
    // with popular products, at 10 only the unknown user's is.
    let mut users: Vec<String> = reference.users().into_iter().step_by(3).collect();
    users.push("nobody".to_owned());
    let short = compare::assert_users(&api, &reference, &users, 10).await;
    let long = compare::assert_users(&api, &reference, &users, 100).await;
    service.stop().await;
    eprintln!(
        "prunes {}, {products:?}, {short:?}, {long:?}",
        reference.prunes
    );

    assert!(products.products >= 100, "{products:?}");
    assert!(
        long.fallbacks > 1 && long.fallbacks < long.users,
        "both thin and full histories are compared: {short:?} {long:?}"
    );
    assert!(
        short.excluded > 0,
        "some purchase was a candidate, so exclusion is compared: {short:?}"
    );
}
