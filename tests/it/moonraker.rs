//! Registration with a real Moonraker (`POST /server/webcams/item`).
