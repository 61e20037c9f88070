import { screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TextGenerationPanel } from '../../src/components/TextGenerationPanel';
import { TextToSpeechPanel } from '../../src/components/TextToSpeechPanel';
import { installFakeFetch, jsonResponse } from '../doubles/fetch';
import { renderWithSettings } from '../render';

const { createObjectURL, revokeObjectURL } = URL;
afterEach(() => {
  vi.unstubAllGlobals();
  Object.assign(URL, { createObjectURL, revokeObjectURL });
});

/** A request that answers only when told to, and fails as fetch does when it is aborted. */
function heldRequest() {
  let answer!: (response: Response) => void;
  const route = ({ init }: { init?: RequestInit }) =>
    new Promise<Response>((resolve, reject) => {
      answer = resolve;
      init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
    });
  return { route, answer: (response: Response) => answer(response) };
}

describe('the panels that run one request at a time', () => {
  it('text-to-speech: busy while synthesizing, shows the error, clears it on a retry that succeeds', async () => {
    const user = userEvent.setup();
    // jsdom has no object URLs.
    URL.createObjectURL = () => 'blob:speech';
    URL.revokeObjectURL = () => {};
    let held = heldRequest();
    installFakeFetch({ '/v1/text-to-speech': (request) => held.route(request) });
    renderWithSettings(<TextToSpeechPanel />);

    await user.click(screen.getByRole('button', { name: 'Speak' }));
    expect(screen.getByRole('button', { name: 'Synthesizing…' })).toBeDisabled();
    held.answer(jsonResponse({ error: { code: 'service_unavailable', message: 'The voice is still loading.' } }, 503));
    expect(await screen.findByRole('alert')).toHaveTextContent('The voice is still loading.');
    expect(screen.getByRole('button', { name: 'Speak' })).toBeEnabled();

    held = heldRequest();
    await user.click(screen.getByRole('button', { name: 'Speak' }));
    expect(screen.queryByRole('alert')).toBeNull();
    held.answer(new Response(new TextEncoder().encode('RIFF'), { headers: { 'Content-Type': 'audio/wav' } }));
    expect(await screen.findByTestId('tts-audio')).toHaveAttribute('src', 'blob:speech');
    expect(screen.getByRole('button', { name: 'Speak' })).toBeEnabled();
    expect(screen.queryByRole('alert')).toBeNull();
  });

  it('text generation: Stop cancels the stream without showing an error', async () => {
    const user = userEvent.setup();
    const held = heldRequest();
    installFakeFetch({ '/v1/generate_stream': (request) => held.route(request) });
    renderWithSettings(<TextGenerationPanel />);

    await user.click(screen.getByRole('button', { name: 'Generate' }));
    expect(screen.getByRole('button', { name: 'Generating…' })).toBeDisabled();
    await user.click(screen.getByRole('button', { name: 'Stop' }));
    expect(await screen.findByRole('button', { name: 'Generate' })).toBeEnabled();
    expect(screen.queryByRole('button', { name: 'Stop' })).toBeNull();
    expect(screen.queryByRole('alert')).toBeNull();
  });
});
