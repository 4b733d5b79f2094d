package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// Names of --tts.
const (
	ttsEspeak = tts.EngineEspeak
	ttsHTTP   = tts.EngineHTTP
)

// ttsEngines are the engines --tts selects by name. Adding one means adding
// its spec here (tts.EngineSpec), not a flag.
func ttsEngines() *tts.Registry { return tts.Builtin() }

// ttsAPIKeyEnv holds the HTTP TTS engine's API key (never a flag: flags
// show up in process listings).
const ttsAPIKeyEnv = envPrefix + "TTS_API_KEY"

// prewarmSlots is --prewarm's default: as many contexts as slots.
const prewarmSlots = -1

// mediaConfig is what the media runtime is built from (the media flags).
type mediaConfig struct {
	onnxLib, model, avatars         string
	tts, ttsURL, ttsModel, ttsVoice string
	ttsKey                          string
	prewarm, intraOpThreads         int
	batchSessions                   int
	batchDelay                      time.Duration
	memoryLimit                     int64 // bytes; 0: none
	noIdleShare                     bool
	idleCacheBytes                  int64
	recording                       recordingConfig
}

// engine holds the process-wide parts of the media runtime: ONNX Runtime,
// the lip-sync model, the avatar library and the TTS engine. Its
// newRuntime is the agent's NewRuntime.
type engine struct {
	cfg     mediaConfig
	log     *slog.Logger
	ort     *inference.Runtime
	model   *inference.Model
	avatars *avatar.Library
	tts     tts.Engine

	// NewMedia opens each session's transport. SFU SEAM: attachSFU sets it
	// to the embedded SFU's adapter (one room per session). While it is
	// nil, sessions' media goes to mediaruntime.DiscardMedia (no viewers).
	NewMedia mediaruntime.NewMedia
}

// openEngine loads ONNX Runtime, the model (generated in memory by default),
// the avatars and the TTS engine. Errors in what the flags name are usage
// errors (exit 2).
func openEngine(ctx context.Context, mc mediaConfig, log *slog.Logger) (_ *engine, err error) {
	e := &engine{cfg: mc, log: log}
	defer func() {
		if err != nil {
			if cerr := e.close(); cerr != nil {
				log.Warn("close ONNX Runtime", "err", cerr)
			}
		}
	}()
	if e.ort, err = inference.NewRuntime(inference.RuntimeOptions{LibraryPath: mc.onnxLib}); err != nil {
		return nil, usagef("--onnxruntime-lib: %v", err)
	}
	if mc.model == "" {
		data, gerr := onnxgen.DefaultModel()
		if gerr != nil {
			return nil, fmt.Errorf("generate the default model: %w", gerr)
		}
		e.model, err = e.ort.LoadModelData("default", data)
	} else {
		e.model, err = e.ort.LoadModel(mc.model)
	}
	if err != nil {
		return nil, usagef("--model %q: %v", mc.model, err)
	}
	if e.avatars, err = avatar.LoadLibrary(mc.avatars, avatar.LoadOptions{}); err != nil {
		return nil, usagef("--avatars %q: %v", mc.avatars, err)
	}
	for _, p := range e.avatars.Problems() {
		log.Warn("avatar pack skipped", "err", p)
	}
	e.tts, err = ttsEngines().New(ctx, mc.tts, tts.EngineOptions{URL: mc.ttsURL, Model: mc.ttsModel, Voice: mc.ttsVoice, APIKey: mc.ttsKey})
	if err != nil {
		return nil, fmt.Errorf("--tts %s: %w (for espeak-ng run scripts/setup.sh, or choose another engine: %s)", mc.tts, err, ttsEngines().Describe())
	}
	log.Info("media engine ready", "onnxruntime", e.ort.Library(), "onnxruntime_version", e.ort.Version(),
		"model", e.model.Name(), "face_size", e.model.Size(), "look_ahead", e.model.LookAhead(), "avatars", e.avatars.Names(), "tts", mc.tts)
	return e, nil
}

// newRuntime builds the media runtime for the devices: one inference
// context pool per device, on its CUDA GPU when it is one. If ONNX Runtime
// has no CUDA provider here, it warns and runs on the CPU.
func (e *engine) newRuntime(devs []*fleetv1.GPU, log *slog.Logger) (runtime.Runtime, error) {
	cfg := mediaruntime.Config{
		Devices:        devs,
		Model:          e.model,
		IntraOpThreads: e.cfg.intraOpThreads,
		BatchSessions:  e.cfg.batchSessions,
		BatchDelay:     e.cfg.batchDelay,
		Prewarm:        e.cfg.prewarm,
		Avatar:         e.avatars.Get,
		TTS:            e.tts,
		Media:          e.NewMedia,
		Logger:         log,
		InputBudget:    e.cfg.memoryLimit / mediaruntime.InputBudgetDivisor,
		HeapLimit:      e.cfg.memoryLimit / 100 * mediaruntime.HeapShedPercent,
		NoIdleShare:    e.cfg.noIdleShare,
		IdleCacheBytes: e.cfg.idleCacheBytes,

		RecordingMaxBytes:    e.cfg.recording.maxBytes,
		RecordingMaxDuration: e.cfg.recording.maxDuration,
	}
	store, err := e.cfg.recording.store(context.Background())
	if err != nil {
		return nil, err
	}
	if store != nil {
		cfg.Recordings = store
		log.Info("session recording on", "store", store.String())
	}
	if cfg.Media == nil {
		log.Warn("no SFU attached: session media is discarded (no viewers)")
		cfg.Media = mediaruntime.NewDiscardMedia
	}
	// A session whose record names a LiveKit room also joins it as its
	// voice agent's avatar (package livekit).
	cfg.Media = livekit.NewMedia(cfg.Media, livekit.MediaOptions{Logger: log})
	if cfg.Prewarm == prewarmSlots {
		for _, d := range devs {
			cfg.Prewarm = max(cfg.Prewarm, int(d.GetSlots()))
		}
	}
	onGPU := e.cudaDevices(devs, log)
	cfg.Device = func(gpu uint32) inference.Device {
		if onGPU[gpu] {
			return inference.GPU(int(gpu))
		}
		return inference.CPU()
	}
	return mediaruntime.New(cfg)
}

// cudaDevices are the GPUs inference can use: it opens (and closes) one
// context on each, so that a CPU-only ONNX Runtime build is found at start
// and not at a session's start. Without CUDA it warns and uses the CPU.
func (e *engine) cudaDevices(devs []*fleetv1.GPU, log *slog.Logger) map[uint32]bool {
	on := map[uint32]bool{}
	for _, d := range devs {
		if d.GetCpu() {
			continue
		}
		c, err := e.model.NewContext(inference.ContextOptions{Batch: 1, IntraOpThreads: 1, Device: inference.GPU(int(d.GetIndex()))})
		if err != nil {
			log.Warn("CUDA unavailable to ONNX Runtime; this GPU's sessions infer on the CPU", "gpu", d.GetIndex(), "err", err)
			continue
		}
		if err := c.Close(); err != nil {
			log.Warn("close probe context", "gpu", d.GetIndex(), "err", err)
		}
		on[d.GetIndex()] = true
	}
	return on
}

// voices are the names the TTS engine accepts, for the worker record.
// voices are the voice names this worker serves, "default" (the engine's
// own default voice) first: a create request that names no voice asks for
// it.
func (e *engine) voices() []string {
	vs := e.tts.Voices()
	if slices.Contains(vs, tts.DefaultVoice) {
		return vs
	}
	return append([]string{tts.DefaultVoice}, vs...)
}

// close releases ONNX Runtime; call it after the runtime is closed.
func (e *engine) close() error {
	if e.ort == nil {
		return nil
	}
	return e.ort.Close()
}
