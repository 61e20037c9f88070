/** Input level, 0..1 RMS, drawn on a perceptual (dB) scale. */
export function LevelMeter({ level }: { level: number }) {
  const db = level > 0 ? 20 * Math.log10(level) : -100;
  const fraction = Math.max(0, Math.min(1, (db + 60) / 60));
  return (
    <div
      className="level-meter"
      role="meter"
      aria-label="Microphone level"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(fraction * 100)}
    >
      <div className="level-fill" style={{ width: `${fraction * 100}%` }} />
    </div>
  );
}
