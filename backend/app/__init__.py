"""GemmaVoice backend. Importing the package sets the process's malloc arenas (see ``malloc_arena``)."""

from app.malloc_arena import use_one_malloc_arena

use_one_malloc_arena()
