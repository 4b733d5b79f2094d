package apiclient

import (
	"context"
	"fmt"
	"net/http"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// maxPreviewBytes bounds a preview image the client reads (the server
// sends at most 64 KiB).
const maxPreviewBytes = 1 << 20

// ListAvatars returns the avatars the fleet's active workers serve (GET
// /v1/avatars; sessions scope), sorted by name. The slice is never nil.
func (c *Client) ListAvatars(ctx context.Context) ([]apiv1.Avatar, error) {
	var l apiv1.AvatarList
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/avatars", out: &l}); err != nil {
		return nil, fmt.Errorf("list avatars: %w", err)
	}
	if l.Avatars == nil {
		l.Avatars = []apiv1.Avatar{}
	}
	return l.Avatars, nil
}

// ListVoices returns the voices the fleet's active workers offer (GET
// /v1/voices; sessions scope), sorted by name. The slice is never nil.
func (c *Client) ListVoices(ctx context.Context) ([]apiv1.Voice, error) {
	var l apiv1.VoiceList
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/voices", out: &l}); err != nil {
		return nil, fmt.Errorf("list voices: %w", err)
	}
	if l.Voices == nil {
		l.Voices = []apiv1.Voice{}
	}
	return l.Voices, nil
}

// AvatarPreview fetches an avatar's preview still (GET
// /v1/avatars/{name}/preview): the image and its media type.
func (c *Client) AvatarPreview(ctx context.Context, name string) (image []byte, contentType string, err error) {
	p, err := pathID("avatar", name)
	if err != nil {
		return nil, "", fmt.Errorf("avatar preview: %w", err)
	}
	req, err := c.newRequest(ctx, call{method: http.MethodGet, path: "/v1/avatars/" + p + "/preview",
		header: http.Header{"Accept": {"image/*"}}})
	if err != nil {
		return nil, "", fmt.Errorf("avatar preview %q: %w", name, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("avatar preview %q: %w", name, err)
	}
	defer closeBody(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("avatar preview %q: %w", name, errorFromResponse(resp))
	}
	data, err := readLimited(resp.Body, maxPreviewBytes)
	if err != nil {
		return nil, "", fmt.Errorf("avatar preview %q: %w", name, err)
	}
	return data, resp.Header.Get("Content-Type"), nil
}
