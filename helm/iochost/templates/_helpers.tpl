{{- define "iochost.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iochost.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "iochost.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The Service carrying the EPICS ports in Service mode ("-epics" fits in 63). */ -}}
{{- define "iochost.epicsServiceName" -}}
{{- printf "%s-epics" (include "iochost.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{- define "iochost.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iochost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "iochost.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "iochost.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "iochost.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository .Values.image.tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{- /* Where the token Secret is mounted; the daemon reads each file once at start. */ -}}
{{- define "iochost.tokenDir" -}}/run/secrets/iochost{{- end -}}

{{- /* Declared plugins (--plugins-file): the ConfigMap, mounted as a directory so that it
       updates in place (a subPath mount would not), and the plugin Secrets' directory. */ -}}
{{- define "iochost.pluginsConfigMap" -}}
{{- printf "%s-plugins" (include "iochost.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}
{{- define "iochost.pluginsDir" -}}/etc/iochost{{- end -}}
{{- define "iochost.pluginsFile" -}}{{ include "iochost.pluginsDir" . }}/plugins.yaml{{- end -}}
{{- define "iochost.gitSshDir" -}}/run/secrets/git-ssh{{- end -}}
{{/* git's ssh for ssh URLs: the Secret's key only, the Secret's known hosts only, never a prompt. */}}
{{- define "iochost.gitSshCommand" -}}
{{- $dir := include "iochost.gitSshDir" . -}}
ssh -o BatchMode=yes -o IdentitiesOnly=yes -i {{ $dir }}/ssh-privatekey -o UserKnownHostsFile={{ $dir }}/known_hosts -o StrictHostKeyChecking=yes
{{- end -}}
{{- define "iochost.pluginSecretsDir" -}}/run/secrets/plugins{{- end -}}

{{- /* The EPICS access security file (--epics-access-security), from epics.accessSecurity. */ -}}
{{- define "iochost.accessSecurityConfigMap" -}}
{{- printf "%s-access-security" (include "iochost.fullname" . | trunc 46 | trimSuffix "-") -}}
{{- end -}}
{{- define "iochost.accessSecurityDir" -}}/etc/iochost-access-security{{- end -}}
{{- define "iochost.accessSecurityFile" -}}{{ include "iochost.accessSecurityDir" . }}/iochost.acf{{- end -}}

{{- /* The beamline configuration (--beamline-config), from beamlineConfig: the ConfigMap's
       data and the pod's checksum/beamline annotation both come from iochost.beamlineYaml. */ -}}
{{- define "iochost.beamlineConfigMap" -}}
{{- printf "%s-beamline" (include "iochost.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}
{{- define "iochost.beamlineDir" -}}/etc/iochost-beamline{{- end -}}
{{- define "iochost.beamlineFile" -}}{{ include "iochost.beamlineDir" . }}/beamline.yaml{{- end -}}
{{- define "iochost.beamlineYaml" -}}
{{- .Values.beamlineConfig | toYaml -}}
{{- end -}}

{{- /* The plugins file: `plugins:` and the list, as the daemon reads it. The ConfigMap's
       data and the pod's checksum/plugins annotation both come from here. */ -}}
{{- define "iochost.pluginsYaml" -}}
{{- dict "plugins" .Values.plugins | toYaml -}}
{{- end -}}

{{- /*
A port range "LOW-HIGH" as JSON [LOW, HIGH]. The schema has checked the shape; this checks
the numbers. Call with (dict "name" "epics.workerPorts" "range" "5100-5199").
*/ -}}
{{- define "iochost.rangeBounds" -}}
{{- $bounds := splitList "-" .range -}}
{{- $low := first $bounds | atoi -}}
{{- $high := last $bounds | atoi -}}
{{- if or (lt $low 1) (gt $high 65535) (gt $low $high) -}}
{{- fail (printf "%s %q is not a port range LOW-HIGH within 1-65535" .name .range) -}}
{{- end -}}
{{- list $low $high | toJson -}}
{{- end -}}

{{- /*
Every port of a range, as a JSON list. Kubernetes has no port ranges, so each port becomes
its own entry; a range is capped at 1000 ports: more is a typo far more often than a plan.
*/ -}}
{{- define "iochost.portList" -}}
{{- $bounds := include "iochost.rangeBounds" . | fromJsonArray -}}
{{- $low := first $bounds | int -}}
{{- $high := last $bounds | int -}}
{{- if gt (sub $high $low) 999 -}}
{{- fail (printf "%s %q has %d ports; at most 1000 (one port entry each)" .name .range (add1 (sub $high $low))) -}}
{{- end -}}
{{- untilStep $low (add1 $high | int) 1 | toJson -}}
{{- end -}}

{{- define "iochost.workerCaPorts" -}}
{{- include "iochost.portList" (dict "name" "epics.workerPorts" "range" .Values.epics.workerPorts) -}}
{{- end -}}

{{- define "iochost.workerPvaPorts" -}}
{{- include "iochost.portList" (dict "name" "epics.workerPvaPorts" "range" .Values.epics.workerPvaPorts) -}}
{{- end -}}

{{- /*
Checks across values that the schema cannot express, with a message naming the values.
Rendered (as nothing) at the top of the StatefulSet.
*/ -}}
{{- define "iochost.checks" -}}
{{- $_ := required "tokenSecret is required: an existing Secret with keys admin-token and read-token (the daemon refuses a network-facing API without tokens)" .Values.tokenSecret -}}
{{- $e := .Values.epics -}}
{{- $ca := include "iochost.workerCaPorts" . | fromJsonArray -}}
{{- $pva := include "iochost.workerPvaPorts" . | fromJsonArray -}}
{{- $caLow := first $ca | int -}}{{- $caHigh := last $ca | int -}}
{{- $pvaLow := first $pva | int -}}{{- $pvaHigh := last $pva | int -}}
{{- if and (le $caLow $pvaHigh) (le $pvaLow $caHigh) -}}
{{- fail (printf "epics.workerPorts %q and epics.workerPvaPorts %q overlap: each worker needs one TCP port of each" $e.workerPorts $e.workerPvaPorts) -}}
{{- end -}}
{{- range $what := list (list "api.port" (int $.Values.api.port)) (list "epics.caPort" (int $e.caPort)) (list "epics.pvaPort" (int $e.pvaPort)) -}}
{{- $port := index $what 1 -}}
{{- if or (and (le $caLow $port) (le $port $caHigh)) (and (le $pvaLow $port) (le $port $pvaHigh)) -}}
{{- fail (printf "%s %d lies inside a worker port range (epics.workerPorts %q, epics.workerPvaPorts %q)" (index $what 0) $port $e.workerPorts $e.workerPvaPorts) -}}
{{- end -}}
{{- end -}}
{{- if eq (int $e.caPort) (int $e.pvaPort) -}}
{{- fail (printf "epics.caPort and epics.pvaPort are both %d" (int $e.caPort)) -}}
{{- end -}}
{{- if and (not .Values.hostNetwork) (eq .Values.epicsService.type "NodePort") -}}
{{- $range := include "iochost.rangeBounds" (dict "name" "epicsService.nodePortRange" "range" (default "30000-32767" .Values.epicsService.nodePortRange)) | fromJsonArray -}}
{{- $low := first $range | int -}}{{- $high := last $range | int -}}
{{- range $what := list (list "epics.caPort" (int $e.caPort) (int $e.caPort)) (list "epics.pvaPort" (int $e.pvaPort) (int $e.pvaPort)) (list "epics.workerPorts" $caLow $caHigh) (list "epics.workerPvaPorts" $pvaLow $pvaHigh) -}}
{{- if or (lt (index $what 1) $low) (gt (index $what 2) $high) -}}
{{- fail (printf "epicsService.type NodePort renders every nodePort equal to its port (a CA search answer names the worker's own port), so %s must lie in epicsService.nodePortRange %q" (index $what 0) $.Values.epicsService.nodePortRange) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.networkPolicy.enabled -}}
{{- if not (or .Values.networkPolicy.epicsCIDRs .Values.networkPolicy.epicsPeers) -}}
{{- fail "networkPolicy.enabled needs networkPolicy.epicsCIDRs or networkPolicy.epicsPeers: with neither, no client could reach the EPICS ports" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- range $env := .Values.extraEnv -}}
{{- if has $env.name (list "IOCHOST_ADMIN_TOKEN" "IOCHOST_READ_TOKEN") -}}
{{- fail (printf "extraEnv %s: tokens come from tokenSecret as files; a token variable would override them and show in the pod spec" $env.name) -}}
{{- end -}}
{{- if has $env.name (list "IOCHOST_BEAMLINE_CONFIG" "IOCMNG_BEAMLINE_CONFIG") -}}
{{- fail (printf "extraEnv %s: give the beamline configuration in the value beamlineConfig; the chart mounts the file and passes --beamline-config" $env.name) -}}
{{- end -}}
{{- if has $env.name (list "IOCHOST_PLUGINS_FILE" "IOCMNG_PLUGINS_CONFIG") -}}
{{- fail (printf "extraEnv %s: declare plugins in the value plugins; the chart mounts the file and passes --plugins-file" $env.name) -}}
{{- end -}}
{{- end -}}
{{- /* Declared plugins: what the schema cannot say. Each entry is named as the daemon's
       log names it, plugins[INDEX] (NAME). */ -}}
{{- $secretsDir := include "iochost.pluginSecretsDir" . -}}
{{- $seen := dict -}}
{{- range $i, $p := .Values.plugins -}}
{{- $where := printf "plugins[%d] (%s)" $i $p.name -}}
{{- if hasKey $seen $p.name -}}
{{- fail (printf "%s: name %q is declared twice (first at plugins[%d]); plugin names are unique" $where $p.name (get $seen $p.name | int)) -}}
{{- end -}}
{{- $_ := set $seen $p.name $i -}}
{{- with $p.git_url -}}
{{- if or (regexMatch "^[Hh][Tt][Tt][Pp][Ss]?://[^/]*@" .) (regexMatch "://[^/:@]*:[^/@]*@" .) -}}
{{- fail (printf "%s: git_url carries credentials; put the token in a Secret listed in pluginSecrets and name its file in pat_file" $where) -}}
{{- end -}}
{{- end -}}
{{- with $p.pat_file -}}
{{- $file := . -}}
{{- $mounted := false -}}
{{- range $secret := $.Values.pluginSecrets -}}
{{- $dir := printf "%s/%s/" $secretsDir $secret -}}
{{- if hasPrefix $dir $file -}}
{{- $key := trimPrefix $dir $file -}}
{{- if and (regexMatch "^[-._a-zA-Z0-9]+$" $key) (ne $key ".") (not (hasPrefix ".." $key)) -}}
{{- $mounted = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $mounted -}}
{{- fail (printf "%s: pat_file %q is not a key of a mounted plugin Secret: it must be %s/SECRET/KEY with SECRET listed in pluginSecrets (now %s)" $where $file $secretsDir (toJson $.Values.pluginSecrets)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Flags the chart derives from values: a second one in extraArgs would silently win
       (argparse keeps the last, and accepts unambiguous abbreviations). */ -}}
{{- $managed := list "host" "port" "data-dir" "epics-host" "ca-port" "allow-shared-ca-port" "pva-port" "worker-ports" "worker-pva-ports" "admin-token-file" "read-token-file" "plugins-file" "epics-control" "epics-table-rows" "epics-access-security" "beamline-config" -}}
{{- range $arg := .Values.extraArgs -}}
{{- if hasPrefix "--" $arg -}}
{{- $flag := trimPrefix "--" (first (splitList "=" $arg)) -}}
{{- range $name := $managed -}}
{{- if and $flag (hasPrefix $flag $name) -}}
{{- if eq $name "plugins-file" -}}
{{- fail (printf "extraArgs %q would override --plugins-file: declare plugins in the value plugins, which the chart mounts and passes" $arg) -}}
{{- end -}}
{{- fail (printf "extraArgs %q would override --%s, which the chart sets from its values" $arg $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The EPICS ports, one list for the pod, the Service and the NetworkPolicy, as JSON
       [{name, port, protocol}]. Each port of a worker range is its own entry. */ -}}
{{- define "iochost.epicsPorts" -}}
{{- $ports := list (dict "name" "ca-search" "port" (int .Values.epics.caPort) "protocol" "UDP") -}}
{{- $ports = append $ports (dict "name" "pva-search" "port" (int .Values.epics.pvaPort) "protocol" "UDP") -}}
{{- range $port := include "iochost.workerCaPorts" . | fromJsonArray -}}
{{- $ports = append $ports (dict "name" (printf "ca-%d" (int $port)) "port" (int $port) "protocol" "TCP") -}}
{{- end -}}
{{- range $port := include "iochost.workerPvaPorts" . | fromJsonArray -}}
{{- $ports = append $ports (dict "name" (printf "pva-%d" (int $port)) "port" (int $port) "protocol" "TCP") -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}

{{/* The pod's stop timeout: the longest grace period the chart knows (the daemon's and every
     declared plugin's), rounded up, + the daemon's 2 s before a worker's SIGKILL (STOP_MARGIN in
     supervisor/lifecycle_types.py) + 3 s for its own exit. A value given shorter is refused. */}}
{{- define "iochost.terminationGracePeriod" -}}
{{- $longest := float64 .Values.gracePeriod -}}
{{- range .Values.plugins -}}
{{- if and .grace_period (gt (float64 .grace_period) $longest) -}}{{- $longest = float64 .grace_period -}}{{- end -}}
{{- end -}}
{{- $needed := add (int (ceil $longest)) 5 -}}
{{- with .Values.terminationGracePeriodSeconds -}}
{{- if lt (int .) (int $needed) -}}
{{- fail (printf "terminationGracePeriodSeconds %v is shorter than the daemon's shutdown: the longest grace period (%v s) + 5 s = %v s" . $longest $needed) -}}
{{- end -}}
{{- . -}}
{{- else -}}
{{- $needed -}}
{{- end -}}
{{- end -}}
