package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestParseConfigRecording: the recording flags, their S3 keys from the
// environment, and the refusals naming the flag.
func TestParseConfigRecording(t *testing.T) {
	keys := map[string]string{recordingsS3AccessKeyEnv: "ak", recordingsS3SecretKeyEnv: "sk"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		err  string
		s3   bool
	}{
		{name: "off"},
		{name: "dir", args: []string{"--recordings-dir", "/tmp/rec", "--recording-max-duration", "10m", "--recording-max-mib", "64"}},
		{name: "s3", args: []string{"--recordings-s3-endpoint", "http://127.0.0.1:9000", "--recordings-s3-bucket", "b"}, env: keys, s3: true},
		{name: "both", args: []string{"--recordings-dir", "/tmp/rec", "--recordings-s3-endpoint", "http://h:9000", "--recordings-s3-bucket", "b"}, err: "choose one"},
		{name: "bucket alone", args: []string{"--recordings-s3-bucket", "b"}, err: "--recordings-s3-endpoint"},
		{name: "no bucket", args: []string{"--recordings-s3-endpoint", "http://h:9000"}, err: "no bucket"},
		{name: "bad endpoint", args: []string{"--recordings-s3-endpoint", "h:9000", "--recordings-s3-bucket", "b"}, err: "endpoint"},
		{name: "half keys", args: []string{"--recordings-s3-endpoint", "http://h:9000", "--recordings-s3-bucket", "b"}, env: map[string]string{recordingsS3AccessKeyEnv: "ak"}, err: "secret key"},
		{name: "duration", args: []string{"--recording-max-duration", "25h"}, err: "--recording-max-duration"},
		{name: "size", args: []string{"--recording-max-mib", "0"}, err: "--recording-max-mib"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, env(tc.env), host("w"), io.Discard)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rc := c.media.recording
			if (rc.s3 != nil) != tc.s3 || (tc.s3 && (rc.s3.AccessKey != "ak" || rc.s3.SecretKey != "sk")) {
				t.Fatalf("recording config %+v", rc)
			}
			if tc.name == "dir" && (rc.dir != "/tmp/rec" || rc.maxDuration != 10*time.Minute || rc.maxBytes != 64<<20) {
				t.Fatalf("recording config %+v", rc)
			}
		})
	}
}
