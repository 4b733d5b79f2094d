// Avatar and voice choices of the demo page: fills the #avatar and #voice
// selects from GET /v1/avatars and GET /v1/voices (what the fleet's active
// workers advertise) and shows the chosen avatar's preview still. The
// preview is fetched with the API key (an <img src> cannot send it) and
// shown as a blob: URL. Plain browser JS, no build step.

// ensureOption makes value selectable in select (a name given in the query
// string that the fleet does not advertise stays choosable: the server
// answers it with unknown_avatar) and selects it.
export function ensureOption(select, value, note) {
  if (!value) return;
  if (![...select.options].some((o) => o.value === value)) {
    const o = document.createElement('option');
    o.value = value;
    o.textContent = note ? `${value} (${note})` : value;
    select.append(o);
  }
  select.value = value;
}

// fill replaces select's options with the names, each labelled by label(item),
// keeping the current choice when it is still there, else "default", else
// the first.
function fill(select, items, label) {
  const keep = select.value;
  select.replaceChildren();
  for (const it of items) {
    const o = document.createElement('option');
    o.value = it.name;
    o.textContent = label(it);
    select.append(o);
  }
  if (keep && items.some((it) => it.name === keep)) select.value = keep;
  else if (items.some((it) => it.name === 'default')) select.value = 'default';
  else if (!keep && items.length === 0) {
    const o = document.createElement('option');
    o.value = '';
    o.textContent = 'default (no worker advertises any)';
    select.append(o);
  } else if (keep) ensureOption(select, keep, 'not advertised');
}

export class Catalog {
  // api(method, path) → {status, data} (the page's JSON API call);
  // fetchImage(path) → Response (a GET with the key); state is where the
  // page's automation reads what was loaded.
  constructor({ avatarSelect, voiceSelect, previewImg, api, fetchImage, state, onError }) {
    Object.assign(this, { avatarSelect, voiceSelect, previewImg, api, fetchImage, state, onError });
    this.previewURL = '';
    this.previewSeq = 0;
    avatarSelect.addEventListener('change', () => this.showPreview());
  }

  // load fetches both lists and fills the selects.
  async load() {
    const st = this.state;
    try {
      const [a, v] = await Promise.all([this.api('GET', '/v1/avatars'), this.api('GET', '/v1/voices')]);
      st.avatars = a.data.avatars || [];
      st.voices = v.data.voices || [];
      st.error = '';
      fill(this.avatarSelect, st.avatars, (av) => `${av.name} (${av.free_slots}/${av.slots} free)`);
      fill(this.voiceSelect, st.voices, (vc) => vc.engines && vc.engines.length ? `${vc.name} (${vc.engines.join(', ')})` : vc.name);
      st.loaded = true;
      await this.showPreview();
    } catch (e) {
      st.error = e.message;
      this.onError('avatars and voices: ' + e.message);
    }
  }

  // showPreview shows the selected avatar's still (none for a name the
  // fleet does not advertise).
  async showPreview() {
    const seq = ++this.previewSeq;
    const name = this.avatarSelect.value;
    const img = this.previewImg;
    const known = (this.state.avatars || []).some((av) => av.name === name);
    this.state.preview = { name, status: 0, width: 0, height: 0 };
    if (!known) { this.clearPreview(); return; }
    try {
      const res = await this.fetchImage('/v1/avatars/' + encodeURIComponent(name) + '/preview');
      if (seq !== this.previewSeq) return;
      this.state.preview.status = res.status;
      if (!res.ok) { this.clearPreview(); return; }
      const blob = await res.blob();
      if (seq !== this.previewSeq) return;
      if (this.previewURL) URL.revokeObjectURL(this.previewURL);
      this.previewURL = URL.createObjectURL(blob);
      img.onload = () => {
        if (seq !== this.previewSeq) return;
        this.state.preview.width = img.naturalWidth;
        this.state.preview.height = img.naturalHeight;
      };
      img.src = this.previewURL;
      img.alt = `Preview of the avatar ${name}`;
      img.hidden = false;
    } catch (e) {
      if (seq === this.previewSeq) this.clearPreview();
      this.onError(`preview of ${name}: ${e.message}`);
    }
  }

  clearPreview() {
    this.previewImg.hidden = true;
    this.previewImg.removeAttribute('src');
    if (this.previewURL) URL.revokeObjectURL(this.previewURL);
    this.previewURL = '';
  }
}
