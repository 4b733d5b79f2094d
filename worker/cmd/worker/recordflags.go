package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/recording"
)

// S3 credentials of the recording store come from the environment, never
// flags (flags show up in process listings).
const (
	recordingsS3AccessKeyEnv = envPrefix + "RECORDINGS_S3_ACCESS_KEY"
	recordingsS3SecretKeyEnv = envPrefix + "RECORDINGS_S3_SECRET_KEY"
)

const (
	maxRecordingMiB      = 1 << 20 // 1 TiB
	maxRecordingDuration = 24 * time.Hour
)

// RecordingFlags are the session recording settings (package recording):
// a directory or an S3-compatible bucket; neither turns recording off.
type RecordingFlags struct {
	Dir                  string
	S3Endpoint, S3Bucket string
	S3Prefix, S3Region   string
	MaxMiB               int
	MaxDuration          time.Duration
}

// AddFlags registers the recording flags.
func (r *RecordingFlags) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&r.Dir, "recordings-dir", "", "directory for session recordings (WebM); empty with no --recordings-s3-endpoint: recording off")
	fs.StringVar(&r.S3Endpoint, "recordings-s3-endpoint", "", "S3-compatible server for session recordings, http(s)://host[:port] (keys from env "+recordingsS3AccessKeyEnv+" and "+recordingsS3SecretKeyEnv+")")
	fs.StringVar(&r.S3Bucket, "recordings-s3-bucket", "", "bucket for session recordings (must exist)")
	fs.StringVar(&r.S3Prefix, "recordings-s3-prefix", "", "key prefix for session recordings in the bucket")
	fs.StringVar(&r.S3Region, "recordings-s3-region", "", "region of the S3 server, if it needs one")
	fs.IntVar(&r.MaxMiB, "recording-max-mib", recording.DefaultMaxBytes>>20, "largest recording file, MiB (a recording stops there)")
	fs.DurationVar(&r.MaxDuration, "recording-max-duration", 4*time.Hour, "longest recording (a recording stops there)")
}

// recordingConfig is the validated recording settings.
type recordingConfig struct {
	dir         string
	s3          *recording.S3Options
	maxBytes    int64
	maxDuration time.Duration
}

func (r *RecordingFlags) resolve(getenv func(string) string) (recordingConfig, error) {
	out := recordingConfig{dir: r.Dir, maxBytes: int64(r.MaxMiB) << 20, maxDuration: r.MaxDuration}
	if r.MaxMiB < 1 || r.MaxMiB > maxRecordingMiB {
		return out, usagef("--recording-max-mib %d: want 1..%d", r.MaxMiB, maxRecordingMiB)
	}
	if r.MaxDuration < time.Second || r.MaxDuration > maxRecordingDuration {
		return out, usagef("--recording-max-duration %v: want 1s..%v", r.MaxDuration, maxRecordingDuration)
	}
	if r.S3Endpoint == "" {
		if r.S3Bucket != "" || r.S3Prefix != "" || r.S3Region != "" {
			return out, usagef("--recordings-s3-bucket, -prefix and -region need --recordings-s3-endpoint")
		}
		return out, nil
	}
	if r.Dir != "" {
		return out, usagef("--recordings-dir and --recordings-s3-endpoint: choose one")
	}
	o := &recording.S3Options{Endpoint: r.S3Endpoint, Bucket: r.S3Bucket, Prefix: r.S3Prefix, Region: r.S3Region,
		AccessKey: getenv(recordingsS3AccessKeyEnv), SecretKey: getenv(recordingsS3SecretKeyEnv)}
	if err := o.Validate(); err != nil {
		return out, usagef("--recordings-s3-*: %v", err)
	}
	out.s3 = o
	return out, nil
}

// shared names the store for every worker configured with it
// (recording.Store.Shared): only an S3 bucket is shared.
func (c recordingConfig) shared() string {
	if c.s3 == nil {
		return ""
	}
	return c.s3.Shared()
}

// store opens the recording store; nil when recording is off.
func (c recordingConfig) store(ctx context.Context) (recording.Store, error) {
	switch {
	case c.dir != "":
		st, err := recording.NewDirStore(c.dir)
		if err != nil {
			return nil, fmt.Errorf("--recordings-dir: %w", err)
		}
		return st, nil
	case c.s3 != nil:
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		st, err := recording.NewS3Store(ctx, *c.s3)
		if err != nil {
			return nil, fmt.Errorf("--recordings-s3-endpoint: %w", err)
		}
		return st, nil
	}
	return nil, nil
}
