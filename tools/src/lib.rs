//! ringmq tools: the load generator `ringmq-bench` and the comparison runner (issue 5).
//!
//! Not built yet; this crate exists so that the workspace layout is the final one.
