// Package kubescale changes how many AvatarFleet workers a Kubernetes
// StatefulSet runs without cutting a session. Each worker's id is its pod's
// name, "<statefulset>-<ordinal>", so the workers whose pods a scale-down
// removes are known in advance (the highest ordinals). Scale drains those
// workers with migration through the fleet's REST API, waits until they
// hold no session, and only then changes the StatefulSet's scale
// subresource; a scale-up changes the scale first and waits until the new
// workers have registered and are active.
//
// NewPlan is the pure part (which workers go or come); Target is the
// Kubernetes side (StatefulSet implements it with client-go) and Fleet the
// fleet side (*apiclient.Client implements it), so both can be replaced in
// tests.
package kubescale
