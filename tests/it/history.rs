//! `GET /api/cameras/<camera>/history`: the last day, one point a minute.
