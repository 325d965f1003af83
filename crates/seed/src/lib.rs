//! The deploy host: a [`tracker::Tracker`] that tells agents about releases and
//! peers and collects their status, and a seed node that serves every release it
//! announced from its store.

pub mod seed;
pub mod tracker;
