package cli

import (
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// newAvatarsCommand returns "avatars" and its verbs.
func newAvatarsCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("avatars", "List the avatars the fleet serves (sessions scope)")
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the avatars the fleet's active workers serve, with free slots and preview URLs",
		Args:  exactArgs(),
		RunE:  withErrors(a.avatarsList),
	})
	return cmd
}

// newVoicesCommand returns "voices" and its verbs.
func newVoicesCommand(a *app) *cobra.Command {
	cmd := newGroupCommand("voices", "List the voices the fleet serves (sessions scope)")
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the voices the fleet's active workers offer, with their TTS engines",
		Args:  exactArgs(),
		RunE:  withErrors(a.voicesList),
	})
	return cmd
}

func (a *app) avatarsList(ctx context.Context, cmd *cobra.Command, _ []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	avatars, err := c.ListAvatars(ctx)
	if err != nil {
		return err
	}
	if a.output == outputJSON {
		return writeJSON(a.opts.Stdout, apiv1.AvatarList{Avatars: avatars})
	}
	return renderAvatars(a.opts.Stdout, avatars)
}

func (a *app) voicesList(ctx context.Context, cmd *cobra.Command, _ []string) error {
	c, err := a.client(cmd)
	if err != nil {
		return err
	}
	voices, err := c.ListVoices(ctx)
	if err != nil {
		return err
	}
	if a.output == outputJSON {
		return writeJSON(a.opts.Stdout, apiv1.VoiceList{Voices: voices})
	}
	return renderVoices(a.opts.Stdout, voices)
}

// renderAvatars prints the avatars table.
func renderAvatars(w io.Writer, avatars []apiv1.Avatar) error {
	tw := newTable(w)
	row(tw, "NAME", "WORKERS", "FREE", "SLOTS", "PREVIEW")
	for _, av := range avatars {
		row(tw, av.Name, strconv.Itoa(av.Workers), strconv.Itoa(av.FreeSlots), strconv.Itoa(av.Slots), av.PreviewURL)
	}
	return tw.Flush()
}

// renderVoices prints the voices table.
func renderVoices(w io.Writer, voices []apiv1.Voice) error {
	tw := newTable(w)
	row(tw, "NAME", "WORKERS", "ENGINES")
	for _, v := range voices {
		row(tw, v.Name, strconv.Itoa(v.Workers), strings.Join(v.Engines, ","))
	}
	return tw.Flush()
}
