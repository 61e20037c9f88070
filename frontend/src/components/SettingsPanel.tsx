import { useState, type FormEvent } from 'react';
import { useSettings } from './SettingsContext';

interface SettingsPanelProps {
  onClose?: () => void;
}

/** API base URL and key, typed by the user and kept in this browser's localStorage only. */
export function SettingsPanel({ onClose }: SettingsPanelProps) {
  const { settings, updateSettings } = useSettings();
  const [apiBaseUrl, setApiBaseUrl] = useState(settings.apiBaseUrl);
  const [apiKey, setApiKey] = useState(settings.apiKey);
  const [showKey, setShowKey] = useState(false);
  const [saved, setSaved] = useState(false);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    updateSettings({ apiBaseUrl, apiKey });
    setSaved(true);
  };

  return (
    <form className="card settings" onSubmit={submit} aria-label="Settings">
      <div className="card-header">
        <h2>Settings</h2>
        {onClose && (
          <button type="button" className="link-button" onClick={onClose} aria-label="Close settings">
            ×
          </button>
        )}
      </div>
      <label className="field">
        <span>API base URL</span>
        <input
          type="url"
          name="apiBaseUrl"
          placeholder="same origin as this page"
          value={apiBaseUrl}
          onChange={(e) => {
            setApiBaseUrl(e.target.value);
            setSaved(false);
          }}
        />
        <small>Leave empty when the web client is served by the API itself.</small>
      </label>
      <label className="field">
        <span>API key</span>
        <div className="input-row">
          <input
            type={showKey ? 'text' : 'password'}
            name="apiKey"
            autoComplete="off"
            placeholder="only if the server sets API_KEY"
            value={apiKey}
            onChange={(e) => {
              setApiKey(e.target.value);
              setSaved(false);
            }}
          />
          <button type="button" className="secondary" onClick={() => setShowKey((v) => !v)}>
            {showKey ? 'Hide' : 'Show'}
          </button>
        </div>
        <small>Stored in this browser only and sent as a Bearer token.</small>
      </label>
      <div className="actions">
        <button type="submit">Save</button>
        {saved && <span className="muted" role="status">Saved.</span>}
      </div>
    </form>
  );
}
