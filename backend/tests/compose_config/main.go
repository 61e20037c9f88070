// compose-config loads a Compose project the way `docker compose config` does and prints the
// resolved project as JSON, or compose's own error message and exit status 1.
//
// It is the Compose Specification's reference loader (github.com/compose-spec/compose-go), which
// Docker Compose itself is built on: schema validation, interpolation (${VAR:-default},
// ${VAR:?message}, ...), merging of anchors and `<<`, normalization (ports, depends_on,
// healthchecks in their long form), profiles, consistency checks (depends_on targets, volumes,
// networks) and paths resolved against the project directory. No Docker engine is needed.
//
//	compose-config [--project-directory DIR] [-f FILE]... [--profile NAME]... [--env-file FILE]...
//
// The variables come from this process's environment, like compose's: COMPOSE_FILE,
// COMPOSE_PROFILES and COMPOSE_DISABLE_ENV_FILE work as they do there, and `.env` in the project
// directory is read unless --env-file names other files or COMPOSE_DISABLE_ENV_FILE is true.
// The tests in backend/tests/test_compose.py build and run it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

type list []string

func (l *list) String() string     { return fmt.Sprint(*l) }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, profiles, envFiles list
	projectDir := flag.String("project-directory", "", "the project directory (default: the first compose file's)")
	flag.Var(&files, "f", "a compose file (repeatable; default: COMPOSE_FILE, else compose.yaml / docker-compose.yml here)")
	flag.Var(&profiles, "profile", "a profile to enable (repeatable; default: COMPOSE_PROFILES)")
	flag.Var(&envFiles, "env-file", "an environment file (repeatable; default: .env in the project directory)")
	flag.Parse()

	out, err := load(*projectDir, files, profiles, envFiles)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
}

// load mirrors `docker compose config --format json`: the same project options, then the same
// steps after loading (environment resolved, env_file discarded, container names unique).
func load(projectDir string, files, profiles, envFiles []string) ([]byte, error) {
	options, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(projectDir),
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithDefaultProfiles(profiles...),
		cli.WithDiscardEnvFile,
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	project, err = project.WithServicesEnvironmentResolved(true)
	if err != nil {
		return nil, err
	}
	if err := project.CheckContainerNameUnicity(); err != nil {
		return nil, err
	}
	return project.MarshalJSON()
}
