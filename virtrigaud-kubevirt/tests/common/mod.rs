//! Fixture glue: the real-apiserver fixtures and the fake virt-controller live in the crate's
//! `testkit` module (feature `testkit`, enabled for the crate's own tests).
#![allow(unused_imports, unreachable_pub)]

pub use virtrigaud_kubevirt::testkit::*;
