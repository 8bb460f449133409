//! Normalized desired apps, built from ecosystem files as PM2 would read them.
