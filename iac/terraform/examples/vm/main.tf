# Example use of the vm-from-template module.
# export TF_VAR_proxmox_api_token='vigie@pve!terraform=<uuid>'

variable "proxmox_api_token" {
  type      = string
  sensitive = true
}

provider "proxmox" {
  endpoint  = "https://pve1.example.net:8006/"
  api_token = var.proxmox_api_token
  insecure  = false
  min_tls   = "1.3"
}

module "web" {
  source = "../../modules/vm-from-template"

  node_name      = "pve1"
  vm_id          = 201
  name           = "web-1"
  template_vm_id = 9000
  ipv4_address   = "192.0.2.21/24"
  ipv4_gateway   = "192.0.2.1"
  ssh_keys       = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnly ops@example"]
}

output "web_ipv4" {
  value = module.web.ipv4_addresses
}
