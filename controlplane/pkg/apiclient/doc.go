// Package apiclient is a small typed Go client of the AvatarFleet REST API
// (/v1). It speaks the JSON shapes of package apiv1, returns every non-2xx
// response as an *APIError carrying the machine-readable code of the error
// envelope, and never retries on its own: callers decide what to do with
// no_capacity, Retry-After and network failures.
//
// Every method takes a context first; cancelling it aborts the request,
// including a running event stream (Events).
package apiclient
