mod support;

mod faults;
mod live_read;
mod live_write;
mod status;
