//! The command line's settings as a library: the configuration's one declaration of every
//! setting, its layers (file, environment, flags) and every value parser they go through
//! (durations, rates, reserves, fields, tiers). The `vtbulk` binary is the rest; this part is
//! a library so the fuzz targets (`fuzz/`) can reach the parsers a user's file or flags feed.

pub mod config;
