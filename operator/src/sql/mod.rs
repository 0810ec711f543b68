//! What the operator does to PostgreSQL, over tokio-postgres. `calls` builds every statement (fixed
//! text, identifiers quoted, values bound); `members` says how a member is reached; `ops` runs the
//! idempotent steps the reconciler takes. The same code runs in tests against local nodes.

pub mod calls;
pub mod members;
pub mod ops;

pub use members::{Credentials, Member};
pub use ops::{GroupObservation, MemberObservation};
