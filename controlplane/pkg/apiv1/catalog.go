package apiv1

// Avatar is one avatar the fleet's active workers advertise (GET
// /v1/avatars). Active: registered, healthy and not draining, i.e. the
// workers a new session can be placed on.
type Avatar struct {
	Name string `json:"name"`
	// Workers counts the active workers that serve it; Slots and FreeSlots
	// sum those workers' session slots, all and not reserved.
	Workers   int `json:"workers"`
	Slots     int `json:"slots"`
	FreeSlots int `json:"free_slots"`
	// PreviewURL is a small still of the avatar (GET
	// /v1/avatars/{name}/preview, JPEG, at most 256 px; same API key).
	PreviewURL string `json:"preview_url"`
}

// AvatarList is the body of GET /v1/avatars, sorted by name.
type AvatarList struct {
	Avatars []Avatar `json:"avatars"`
}

// Voice is one voice the fleet's active workers advertise (GET /v1/voices).
type Voice struct {
	Name string `json:"name"`
	// Engines are the text-to-speech engines behind it ("espeak",
	// "http"), as its workers report them, sorted; absent when none did.
	Engines []string `json:"engines,omitempty"`
	// Workers counts the active workers that offer it.
	Workers int `json:"workers"`
}

// VoiceList is the body of GET /v1/voices, sorted by name.
type VoiceList struct {
	Voices []Voice `json:"voices"`
}
