//! The deploy host: a [`tracker::Tracker`] that tells agents about releases and
//! peers and collects their status, a seed node that serves every release it
//! announced from its store, and [`web`], a read-only live page of the fleet.

pub mod peers;
pub mod seed;
pub mod tracker;
pub mod web;
