import type { AudioCaptureOptions, RoomOptions, TrackPublishOptions } from 'livekit-client';

type LiveKitClient = typeof import('livekit-client');

/** One call the component made on the room, in the order it made them. */
export type RoomCall =
  | { method: 'connect'; url: string; token: string }
  | { method: 'disconnect' }
  | {
      method: 'setMicrophoneEnabled';
      enabled: boolean;
      captureOptions?: AudioCaptureOptions;
      publishOptions?: TrackPublishOptions;
      /**
       * Whether livekit-client would start the pre-connect buffer for this microphone: 2.21's
       * LocalParticipant.setTrackEnabled starts it when the room's publishDefaults, merged with the
       * capture options (the second argument), have preConnectBuffer; the publish options (the third)
       * play no part.
       */
      startsPreConnectBuffer: boolean;
    };

/**
 * Builds RecordingRoom, a test double of livekit-client's Room, on the library's real Room (passed in,
 * since a test that mocks 'livekit-client' cannot import it here). It is a real Room, so
 * @livekit/components-react's hooks work on it, but it records its constructor options and what the
 * component asks of it, and reaches no server: connect() waits until the test calls
 * `finishConnecting()`, the microphone is never opened, and disconnect() emits Disconnected as a
 * connected room does.
 */
export function recordingRoomClass({ Room, RoomEvent, ConnectionState }: LiveKitClient) {
  return class RecordingRoom extends Room {
    /** Every room made since the last `reset()`, oldest first. */
    static instances: RecordingRoom[] = [];

    static reset(): void {
      RecordingRoom.instances = [];
    }

    readonly constructedWith: RoomOptions | undefined;
    readonly calls: RoomCall[] = [];
    private connected: { resolve: () => void; reject: (error: Error) => void } | null = null;

    constructor(options?: RoomOptions) {
      super(options);
      this.constructedWith = options;
      RecordingRoom.instances.push(this);
      // The library opens the microphone here (getUserMedia, then publishing): record instead.
      this.localParticipant.setMicrophoneEnabled = async (enabled, captureOptions, publishOptions) => {
        const merged = { ...this.options.publishDefaults, ...captureOptions };
        this.calls.push({
          method: 'setMicrophoneEnabled',
          enabled,
          captureOptions,
          publishOptions,
          startsPreConnectBuffer: enabled && merged.preConnectBuffer === true,
        });
        return undefined;
      };
    }

    // (Room assigns connect and disconnect per instance in its constructor, so these are fields too.)
    override connect = (url: string, token: string): Promise<void> => {
      this.calls.push({ method: 'connect', url, token });
      return new Promise<void>((resolve, reject) => {
        this.connected = { resolve, reject };
      });
    };

    override disconnect = async (): Promise<void> => {
      this.calls.push({ method: 'disconnect' });
      const wasConnected = this.state !== ConnectionState.Disconnected;
      this.state = ConnectionState.Disconnected;
      if (wasConnected) this.emit(RoomEvent.Disconnected);
    };

    /** Lets the pending connect() resolve, as when the server accepted the token. */
    finishConnecting(): void {
      if (!this.connected) throw new Error('RecordingRoom: connect() was not called');
      this.state = ConnectionState.Connected;
      this.connected.resolve();
      this.emit(RoomEvent.ConnectionStateChanged, ConnectionState.Connected);
    }

    /** The calls of one method, in order. */
    callsOf<M extends RoomCall['method']>(method: M): Extract<RoomCall, { method: M }>[] {
      return this.calls.filter((call): call is Extract<RoomCall, { method: M }> => call.method === method);
    }
  };
}

export type RecordingRoom = InstanceType<ReturnType<typeof recordingRoomClass>>;
