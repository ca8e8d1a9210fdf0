//! The route table: every path the API serves, written once with the methods it takes. A path
//! in the table asked with another method is 405 with the `Allow` the table gives; a path not
//! in it is 404. Path parameters (`{name}`, `{id}`, `{seq}`) come from the match.

use http::Method;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `/`: the dashboard, or a pasted `/?action=stream` / `/?action=snapshot`.
    Root,
    /// `/index.html`: the dashboard.
    Index,
    /// `/healthz`.
    Health,
    /// `/stream` (ustreamer's and mjpg-streamer's URL).
    PasteStream,
    /// `/snapshot` (ustreamer's and mjpg-streamer's URL).
    PasteSnapshot,
    /// `/metrics`.
    Metrics,
    /// `/api/status`.
    Status,
    /// `/api/events`.
    Events,
    /// `/api/jobs`.
    Jobs,
    /// `/api/exports`: the list, or a new export.
    Exports,
    /// `/api/exports/{id}`: one export, or its deletion.
    Export,
    /// `/api/exports/{id}/file`.
    ExportFile,
    /// `/api/cameras/{name}`.
    Camera,
    /// `/api/cameras/{name}/latest.jpg`.
    Latest,
    /// `/api/cameras/{name}/stream.mjpeg`.
    Stream,
    /// `/api/cameras/{name}/snapshots`.
    Snapshots,
    /// `/api/cameras/{name}/snapshots/{seq}.jpg`.
    Snapshot,
    /// `/api/cameras/{name}/start`.
    Start,
    /// `/api/cameras/{name}/stop`.
    Stop,
    /// `/api/cameras/{name}/whep`: a WebRTC offer (WHEP).
    Whep,
    /// `/api/cameras/{name}/whep/{session}`: trickle ICE, or the session's end.
    WhepSession,
    /// `/api/cameras/{name}/controls`: the camera's controls, or new values for some.
    Controls,
    /// `/api/cameras/{name}/history`: the last day, one point a minute.
    History,
}

/// The methods a route takes. GET includes HEAD (the server answers HEAD like GET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Methods {
    get: bool,
    post: bool,
    put: bool,
    delete: bool,
    /// PATCH and OPTIONS: WHEP's.
    patch: bool,
    options: bool,
}

const NONE: Methods = Methods { get: false, post: false, put: false, delete: false, patch: false, options: false };
const GET: Methods = Methods { get: true, ..NONE };
const POST: Methods = Methods { post: true, ..NONE };
const GET_POST: Methods = Methods { get: true, post: true, ..NONE };
const GET_DELETE: Methods = Methods { get: true, delete: true, ..NONE };
const GET_PUT: Methods = Methods { get: true, put: true, ..NONE };
const POST_OPTIONS: Methods = Methods { post: true, options: true, ..NONE };
const PATCH_DELETE_OPTIONS: Methods = Methods { patch: true, delete: true, options: true, ..NONE };

impl Methods {
    /// Whether `m` is one of them.
    pub(super) fn allows(self, m: &Method) -> bool {
        match *m {
            Method::GET | Method::HEAD => self.get,
            Method::POST => self.post,
            Method::PUT => self.put,
            Method::DELETE => self.delete,
            Method::PATCH => self.patch,
            Method::OPTIONS => self.options,
            _ => false,
        }
    }

    /// The `Allow` header's value.
    pub(super) fn allow(self) -> String {
        let names = [
            (self.get, "GET, HEAD"),
            (self.post, "POST"),
            (self.put, "PUT"),
            (self.patch, "PATCH"),
            (self.delete, "DELETE"),
            (self.options, "OPTIONS"),
        ];
        names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
    }
}

/// Every path, once.
const TABLE: [(&str, Route, Methods); 23] = [
    ("/", Route::Root, GET),
    ("/index.html", Route::Index, GET),
    ("/healthz", Route::Health, GET),
    ("/stream", Route::PasteStream, GET),
    ("/snapshot", Route::PasteSnapshot, GET),
    ("/metrics", Route::Metrics, GET),
    ("/api/status", Route::Status, GET),
    ("/api/events", Route::Events, GET),
    ("/api/jobs", Route::Jobs, GET),
    ("/api/exports", Route::Exports, GET_POST),
    ("/api/exports/{id}", Route::Export, GET_DELETE),
    ("/api/exports/{id}/file", Route::ExportFile, GET),
    ("/api/cameras/{name}", Route::Camera, GET),
    ("/api/cameras/{name}/latest.jpg", Route::Latest, GET),
    ("/api/cameras/{name}/stream.mjpeg", Route::Stream, GET),
    ("/api/cameras/{name}/snapshots", Route::Snapshots, GET),
    ("/api/cameras/{name}/snapshots/{seq}.jpg", Route::Snapshot, GET),
    ("/api/cameras/{name}/start", Route::Start, POST),
    ("/api/cameras/{name}/stop", Route::Stop, POST),
    ("/api/cameras/{name}/whep", Route::Whep, POST_OPTIONS),
    ("/api/cameras/{name}/whep/{session}", Route::WhepSession, PATCH_DELETE_OPTIONS),
    ("/api/cameras/{name}/controls", Route::Controls, GET_PUT),
    ("/api/cameras/{name}/history", Route::History, GET),
];

/// The table as a router.
pub(super) struct Table(matchit::Router<(Route, Methods)>);

/// A path found in the table.
pub(super) struct Found<'t, 'p> {
    /// What it names.
    pub route: Route,
    /// The methods it takes.
    pub methods: Methods,
    params: matchit::Params<'t, 'p>,
}

impl Found<'_, '_> {
    /// A path parameter of the route (empty if the route has none of that name).
    pub fn param(&self, key: &str) -> &str {
        self.params.get(key).unwrap_or_default()
    }
}

impl Table {
    pub(super) fn new() -> Table {
        let mut router = matchit::Router::new();
        for (path, route, methods) in TABLE {
            router.insert(path, (route, methods)).expect("the table's paths are distinct and well formed");
        }
        Table(router)
    }

    /// The route `path` names, if any.
    pub(super) fn find<'t, 'p>(&'t self, path: &'p str) -> Option<Found<'t, 'p>> {
        let m = self.0.at(path).ok()?;
        let (route, methods) = *m.value;
        Some(Found { route, methods, params: m.params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_route_and_parameters() {
        let t = Table::new();
        let f = t.find("/api/cameras/cam0/snapshots/42.jpg").unwrap();
        assert_eq!((f.route, f.param("name"), f.param("seq")), (Route::Snapshot, "cam0", "42"));
        assert_eq!(t.find("/api/exports/7/file").unwrap().param("id"), "7");
        let f = t.find("/api/cameras/cam0/whep/00ff").unwrap();
        assert_eq!((f.route, f.param("name"), f.param("session")), (Route::WhepSession, "cam0", "00ff"));
        assert_eq!(t.find("/api/cameras/cam0/whep").unwrap().route, Route::Whep);
        assert_eq!(t.find("/api/cameras/cam0/snapshots").unwrap().route, Route::Snapshots);
        assert_eq!(t.find("/api/cameras/cam0").unwrap().route, Route::Camera);
        for missing in
            ["/api/cameras/", "/api/cameras/cam0/", "/api/exports/", "/api/status/", "/x", "/api/exports/1/x"]
        {
            assert!(t.find(missing).is_none(), "{missing}");
        }
        assert!(t.find("/api/cameras/cam0/snapshots/42").is_none(), "a snapshot is {{seq}}.jpg");
    }

    #[test]
    fn allow_comes_from_the_table() {
        assert_eq!(GET.allow(), "GET, HEAD");
        assert_eq!(POST.allow(), "POST");
        assert_eq!(GET_POST.allow(), "GET, HEAD, POST");
        assert_eq!(GET_DELETE.allow(), "GET, HEAD, DELETE");
        assert_eq!(GET_PUT.allow(), "GET, HEAD, PUT");
        assert!(GET.allows(&Method::HEAD) && !GET.allows(&Method::POST) && !GET.allows(&Method::OPTIONS));
        assert!(GET_DELETE.allows(&Method::DELETE) && !POST.allows(&Method::GET));
        assert_eq!(PATCH_DELETE_OPTIONS.allow(), "PATCH, DELETE, OPTIONS");
        assert!(POST_OPTIONS.allows(&Method::OPTIONS) && !GET_POST.allows(&Method::PATCH));
    }
}
