interface ErrorMessageProps {
  message: string | null | undefined;
  onDismiss?: () => void;
  title?: string;
}

/** A readable error, announced to assistive technology. */
export function ErrorMessage({ message, onDismiss, title }: ErrorMessageProps) {
  if (!message) return null;
  return (
    <div className="error" role="alert">
      <div>
        {title && <strong>{title}: </strong>}
        {message}
      </div>
      {onDismiss && (
        <button type="button" className="link-button" onClick={onDismiss} aria-label="Dismiss error">
          ×
        </button>
      )}
    </div>
  );
}
