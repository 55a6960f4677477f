//! The Postgres pool, with the project's migrations applied at start-up
//! (sqlx takes an advisory lock, so concurrent starters do not race), and
//! what a database error means for whoever got it ([`Failure`]); and
//! [`text_enum!`](crate::text_enum), the states and kinds stored as text.

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The workspace's `migrations/`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connects and migrates.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let pool = pool(cfg, cfg.max_connections, &[]).await?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

/// A second pool of a process that has [`connect`]ed, for reads by key
/// (an API's answers): at most `connections`, and generic plans. A
/// prepared statement is then planned once per connection; by default
/// PostgreSQL plans each execution again while it judges the generic plan
/// dearer, and for the recommendation's answers (`= ANY($n)` of a few
/// keys) it always did: a fifth of PostgreSQL's time went to planning.
pub async fn readers(cfg: &DatabaseConfig, connections: u32) -> anyhow::Result<PgPool> {
    pool(
        cfg,
        connections,
        &[("plan_cache_mode", "force_generic_plan")],
    )
    .await
}

async fn pool(
    cfg: &DatabaseConfig,
    connections: u32,
    settings: &[(&str, &str)],
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = cfg
        .url
        .expose()
        .parse()
        .context("database.url is not a PostgreSQL URL")?;
    // A process paused or hung inside a transaction (SIGSTOP, a debugger, a
    // stuck VM) must not hold its row locks forever: the server ends such a
    // session, and whoever owns the partitions now can commit.
    let options = options
        .options([(
            "idle_in_transaction_session_timeout",
            format!("{}ms", cfg.idle_in_transaction_timeout_ms),
        )])
        .options(settings.iter().copied());
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// What a database error means, by its kind and SQLSTATE class: the one
/// reading of Postgres errors that HTTP answers and workers share.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database could not be reached or went away (I/O, TLS, the pool;
    /// class 08 connection exception, 57 operator intervention): retry.
    Unavailable,
    /// It refused the data (class 22 data exception: encoding, range,
    /// length; 23 integrity constraint; 54000 program limit, an index row
    /// too large): the same input fails the same way every time.
    Refused { code: String, message: String },
    /// Anything else: a bug in a statement, a lock, a serialization failure.
    Other,
}

impl Failure {
    pub fn of(error: &sqlx::Error) -> Failure {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => Failure::Unavailable,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                let class = code.get(..2).unwrap_or_default();
                if matches!(class, "08" | "57") {
                    Failure::Unavailable
                } else if matches!(class, "22" | "23") || code == "54000" {
                    Failure::Refused {
                        code: code.into_owned(),
                        message: db.message().to_owned(),
                    }
                } else {
                    Failure::Other
                }
            }
            _ => Failure::Other,
        }
    }

    /// Refused text the database cannot store: a NUL, or bytes invalid in
    /// its encoding (22021, 22P05).
    pub fn is_unstorable_text(&self) -> bool {
        matches!(self, Failure::Refused { code, .. } if code == "22021" || code == "22P05")
    }
}

/// Declares an enum stored in a text column (a `CHECK (… IN (…))` lists the
/// same texts): serde and OpenAPI write its texts, sqlx binds and reads it
/// as one, and [`as_str`] gives the text for SQL written around it. A text
/// the enum does not know is an error when read, never a default.
///
/// ```ignore
/// shared::text_enum! {
///     /// Where a job is (`pagecount_jobs.state`).
///     JobState { Running = "running", Succeeded = "succeeded", Cancelled = "cancelled" }
/// }
/// ```
#[macro_export]
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        // The texts are the variants in snake_case: utoipa reads the enum's
        // `rename_all` (it does not see a `rename` made of a macro
        // argument), serde the exact text (a test checks they agree).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* #[serde(rename = $text)] $variant),* }

        impl $name {
            /// Every variant, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }

        impl ::sqlx::Type<::sqlx::Postgres> for $name {
            fn type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> ::sqlx::Encode<'q, ::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut ::sqlx::postgres::PgArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<'q, ::sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> ::sqlx::Decode<'r, ::sqlx::Postgres> for $name {
            fn decode(
                value: ::sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, ::sqlx::error::BoxDynError> {
                let text = <&str as ::sqlx::Decode<'r, ::sqlx::Postgres>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}
