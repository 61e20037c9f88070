import { useId, useState, type FormEvent } from 'react';
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
  const id = useId();

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
      <div className="field">
        <label htmlFor={`${id}-url`}>API base URL</label>
        <input
          id={`${id}-url`}
          aria-describedby={`${id}-url-hint`}
          type="url"
          name="apiBaseUrl"
          placeholder="same origin as this page"
          value={apiBaseUrl}
          onChange={(e) => {
            setApiBaseUrl(e.target.value);
            setSaved(false);
          }}
        />
        <small id={`${id}-url-hint`}>Leave empty when the web client is served by the API itself.</small>
      </div>
      <div className="field">
        <label htmlFor={`${id}-key`}>API key</label>
        <div className="input-row">
          <input
            id={`${id}-key`}
            aria-describedby={`${id}-key-hint`}
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
        <small id={`${id}-key-hint`}>Stored in this browser only and sent as a Bearer token.</small>
      </div>
      <div className="actions">
        <button type="submit">Save</button>
        {saved && <span className="muted" role="status">Saved.</span>}
      </div>
    </form>
  );
}
