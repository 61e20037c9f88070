import { describe, expect, it } from 'vitest';
import { keySubprotocol, socketTarget } from '../../src/api/conversation';

describe('WebSocket authentication', () => {
  it('moves the api_key query parameter into a subprotocol', () => {
    const target = socketTarget('wss://app.example/v1/conversation/ws?api_key=abc_DEF-123&x=1');
    expect(target.url).toBe('wss://app.example/v1/conversation/ws?x=1');
    expect(target.url).not.toContain('abc_DEF-123');
    expect(target.protocols).toEqual(['gemmavoice', 'apikey.abc_DEF-123']);
  });

  it('offers only the protocol name without a key', () => {
    expect(socketTarget('ws://h:8000/v1/conversation/ws')).toEqual({
      url: 'ws://h:8000/v1/conversation/ws',
      protocols: ['gemmavoice'],
    });
  });

  it('base64url-encodes a key that a subprotocol cannot carry as it is', () => {
    const protocol = keySubprotocol('pässwörd/with spaces?');
    expect(protocol.startsWith('apikey-b64.')).toBe(true);
    expect(protocol).toMatch(/^[A-Za-z0-9._-]+$/);
    const encoded = protocol.slice('apikey-b64.'.length).replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(encoded + '='.repeat((4 - (encoded.length % 4)) % 4)), (c) => c.charCodeAt(0));
    expect(new TextDecoder().decode(bytes)).toBe('pässwörd/with spaces?');
  });
});
