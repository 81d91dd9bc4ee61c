variable "node_name" {
  description = "Proxmox node that hosts the VM."
  type        = string
}

variable "vm_id" {
  description = "VM id (100-999999999)."
  type        = number
}

variable "name" {
  description = "VM name (a DNS label)."
  type        = string
}

variable "template_vm_id" {
  description = "VM id of the cloud-init template to clone."
  type        = number
}

variable "full_clone" {
  description = "Full clone (true) or linked clone (false)."
  type        = bool
  default     = true
}

variable "cores" {
  description = "vCPU cores per socket."
  type        = number
  default     = 2
}

variable "sockets" {
  description = "CPU sockets."
  type        = number
  default     = 1
}

variable "memory_mib" {
  description = "Memory in MiB."
  type        = number
  default     = 2048
}

variable "disk_datastore" {
  description = "Datastore of the boot disk (scsi0)."
  type        = string
  default     = "local-lvm"
}

variable "disk_gib" {
  description = "Size of the boot disk in GiB; the cloned disk is grown to it."
  type        = number
  default     = 20
}

variable "bridge" {
  description = "Bridge of the first network device."
  type        = string
  default     = "vmbr0"
}

variable "vlan_id" {
  description = "VLAN tag of the first network device (null: untagged)."
  type        = number
  default     = null
}

variable "ci_user" {
  description = "User created by cloud-init."
  type        = string
  default     = "debian"
}

variable "ssh_keys" {
  description = "SSH public keys for the cloud-init user."
  type        = list(string)
  default     = []
}

variable "ipv4_address" {
  description = "IPv4 address in CIDR form, or \"dhcp\"."
  type        = string
  default     = "dhcp"
}

variable "ipv4_gateway" {
  description = "IPv4 gateway (null with DHCP)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Proxmox tags."
  type        = list(string)
  default     = ["vigie"]
}

variable "agent_enabled" {
  description = "Enable the QEMU guest agent option (the template must have qemu-guest-agent)."
  type        = bool
  default     = true
}

variable "started" {
  description = "Start the VM after creation."
  type        = bool
  default     = true
}
