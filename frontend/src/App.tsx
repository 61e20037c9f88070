import { useEffect, useState } from 'react';
import { ServerStatus } from './components/ServerStatus';
import { SettingsPanel } from './components/SettingsPanel';
import { SpeechToTextPanel } from './components/SpeechToTextPanel';
import { TextGenerationPanel } from './components/TextGenerationPanel';
import { TextToSpeechPanel } from './components/TextToSpeechPanel';
import { VoiceChatPanel } from './components/VoiceChatPanel';
import { moveWithArrowKeys } from './components/arrowKeys';

export const TABS = [
  { id: 'generate', label: 'Text generation', Panel: TextGenerationPanel },
  { id: 'stt', label: 'Speech-to-text', Panel: SpeechToTextPanel },
  { id: 'tts', label: 'Text-to-speech', Panel: TextToSpeechPanel },
  { id: 'voice', label: 'Voice chat', Panel: VoiceChatPanel },
] as const;

type TabId = (typeof TABS)[number]['id'];

function tabFromHash(): TabId {
  const id = window.location.hash.replace(/^#/, '');
  return TABS.some((t) => t.id === id) ? (id as TabId) : 'voice';
}

export function App() {
  const [tab, setTab] = useState<TabId>(tabFromHash);
  const [settingsOpen, setSettingsOpen] = useState(false);

  useEffect(() => {
    const onHash = () => setTab(tabFromHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  const select = (id: TabId) => {
    setTab(id);
    window.history.replaceState(null, '', `#${id}`);
  };

  return (
    <div className="app">
      <header className="app-header">
        <div className="brand">
          <img src="/favicon.svg" alt="" width={28} height={28} />
          <span>GemmaVoice</span>
        </div>
        <div className="header-right">
          <ServerStatus />
          <button
            type="button"
            className="secondary"
            aria-expanded={settingsOpen}
            onClick={() => setSettingsOpen((open) => !open)}
          >
            Settings
          </button>
        </div>
      </header>

      {settingsOpen && <SettingsPanel onClose={() => setSettingsOpen(false)} />}

      <nav
        className="tabs"
        role="tablist"
        aria-label="Features"
        onKeyDown={(event) =>
          moveWithArrowKeys(
            event,
            TABS.map((t) => t.id),
            tab,
            select,
          )
        }
      >
        {TABS.map(({ id, label }) => (
          <button
            key={id}
            id={`tab-${id}`}
            type="button"
            role="tab"
            aria-selected={tab === id}
            aria-controls={`panel-${id}`}
            tabIndex={tab === id ? 0 : -1}
            className={tab === id ? 'active' : ''}
            onClick={() => select(id)}
          >
            {label}
          </button>
        ))}
      </nav>

      {/* Panels stay mounted so a voice session or a stream survives switching tabs. */}
      {TABS.map(({ id, Panel }) => (
        <div key={id} id={`panel-${id}`} role="tabpanel" aria-labelledby={`tab-${id}`} hidden={tab !== id}>
          <Panel />
        </div>
      ))}
    </div>
  );
}
