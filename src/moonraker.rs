//! Registration with Moonraker (Mainsail, Fluidd, KlipperScreen, the mobile apps): each
//! camera's stream and snapshot URLs, kept in sync with `POST /server/webcams/item`.
