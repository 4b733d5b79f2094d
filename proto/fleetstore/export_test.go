package fleetstore

// ReservedBy exposes reservedBy (the read-back of a reservation whose
// outcome was unknown) to the external tests.
var ReservedBy = (*Store).reservedBy
