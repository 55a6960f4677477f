//! End-to-end tests of the paths that cross services live in `tests/`:
//! each starts the services it needs in-process, on one test environment
//! (its own topics and database on the real broker and PostgreSQL).
