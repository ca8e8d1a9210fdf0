//! Camera controls: `GET`/`PUT /api/cameras/<camera>/controls`, persisted and reapplied.
