package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"
)

// iceCredentialEnv holds the TURN credential (kept out of flags, which show
// in process listings).
const iceCredentialEnv = envPrefix + "ICE_CREDENTIAL"

// maxICEServers bounds --ice-servers: each becomes a Link header of every
// WHEP/WHIP answer.
const maxICEServers = 8

// maxViewersLimit bounds --max-viewers: past a few hundred a session's
// fan-out outgrows one worker's uplink anyway.
const maxViewersLimit = 1000

// sfuConfig is the embedded SFU's part of the command line.
type sfuConfig struct {
	listenIP   string
	iceServers []webrtc.ICEServer
	iceLite    bool
	maxViewers int
	// noBatching and noGSO come from --send-batching (off, sendmmsg).
	noBatching, noGSO bool
}

// setBatching checks --send-batching.
func (c *sfuConfig) setBatching(mode string) error {
	switch mode {
	case "gso", "":
		c.noBatching, c.noGSO = false, false
	case "sendmmsg":
		c.noBatching, c.noGSO = false, true
	case "off":
		c.noBatching, c.noGSO = true, true
	default:
		return usagef("--send-batching %q: want gso, sendmmsg or off", mode)
	}
	return nil
}

// set checks the SFU flags.
func (c *sfuConfig) set(listenIP, servers, username, credential string, lite bool, maxViewers int) error {
	if net.ParseIP(listenIP) == nil {
		return usagef("--media-listen-ip %q is not an IP address", listenIP)
	}
	if maxViewers < 1 || maxViewers > maxViewersLimit {
		return usagef("--max-viewers %d: want 1..%d", maxViewers, maxViewersLimit)
	}
	var list []webrtc.ICEServer
	for raw := range strings.SplitSeq(servers, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := stun.ParseURI(raw)
		if err != nil {
			return usagef("--ice-servers %q: %v", raw, err)
		}
		s := webrtc.ICEServer{URLs: []string{raw}}
		if u.Scheme == stun.SchemeTypeTURN || u.Scheme == stun.SchemeTypeTURNS {
			if username == "" || credential == "" {
				return usagef("--ice-servers %q is a TURN server: it needs --ice-username and %s", raw, iceCredentialEnv)
			}
			s.Username, s.Credential = username, credential
		}
		list = append(list, s)
	}
	if len(list) > maxICEServers {
		return usagef("--ice-servers: %d servers, at most %d", len(list), maxICEServers)
	}
	c.listenIP, c.iceServers, c.iceLite, c.maxViewers = listenIP, list, lite, maxViewers
	return nil
}

func (c *sfuConfig) String() string {
	return fmt.Sprintf("listen %s, %d ICE servers, lite %t, %d viewers per session, send batching %t, GSO %t", c.listenIP, len(c.iceServers), c.iceLite, c.maxViewers, !c.noBatching, !c.noGSO)
}
